#include "commands.h"

namespace evmdk::cli {

void register_verify_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
