#include "commands.h"

namespace evmdk::cli {

void register_hook_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
