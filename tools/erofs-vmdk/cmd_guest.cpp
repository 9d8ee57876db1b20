#include "commands.h"

namespace evmdk::cli {

void register_guest_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
