#include "commands.h"

namespace evmdk::cli {

void register_vmdk_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
