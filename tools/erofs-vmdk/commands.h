#pragma once
// Each subcommand group lives in its own cmd_*.cpp and registers itself here.
// A command that must exit non-zero without an error message throws CLI::RuntimeError(code);
// any evmdk::Error escaping a command is printed as "erofs-vmdk: <message>" with exit status 1.
#include <CLI/CLI.hpp>

namespace evmdk::cli {

void register_vmdk_commands(CLI::App& app);    // lint, map           (cmd_vmdk.cpp)
void register_host_commands(CLI::App& app);    // inspect, compose    (cmd_host.cpp)
void register_guest_commands(CLI::App& app);   // guest mount|teardown|status (cmd_guest.cpp)
void register_hook_commands(CLI::App& app);    // hook, hook cleanup  (cmd_hook.cpp)
void register_verify_commands(CLI::App& app);  // verify              (cmd_verify.cpp)
void register_verity_commands(CLI::App& app);  // verity format|...   (cmd_verity.cpp)

}  // namespace evmdk::cli
