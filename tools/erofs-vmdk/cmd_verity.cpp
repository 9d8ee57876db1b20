#include "commands.h"

namespace evmdk::cli {

void register_verity_commands(CLI::App& /*app*/) {}

}  // namespace evmdk::cli
