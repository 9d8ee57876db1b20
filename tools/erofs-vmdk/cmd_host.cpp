#include "commands.h"

namespace evmdk::cli {

void register_host_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
