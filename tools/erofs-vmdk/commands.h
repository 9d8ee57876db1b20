#pragma once
// Each subcommand group lives in its own cmd_*.cpp and registers itself here.
// A command that must exit non-zero without an error message throws CLI::RuntimeError(code);
// any evmdk::Error escaping a command is printed as "erofs-vmdk: <message>" with exit status 1.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

namespace evmdk::cli {

void register_vmdk_commands(CLI::App& app);    // lint, map           (cmd_vmdk.cpp)
void register_host_commands(CLI::App& app);    // inspect, compose    (cmd_host.cpp)
void register_guest_commands(CLI::App& app);   // guest mount|teardown|status (cmd_guest.cpp)
void register_hook_commands(CLI::App& app);    // hook, hook cleanup  (cmd_hook.cpp)
void register_verify_commands(CLI::App& app);  // verify              (cmd_verify.cpp)
void register_verity_commands(CLI::App& app);  // verity format|...   (cmd_verity.cpp)

// -q,--quiet on a command that prints a result: nothing on stdout, the exit status tells the
// result; errors and warnings still go to stderr.
inline void add_quiet_flag(CLI::App* command, bool& quiet) {
  command->add_flag("-q,--quiet", quiet,
                    "print nothing on stdout; the exit status tells the result (errors and "
                    "warnings still go to stderr)");
}
inline std::shared_ptr<bool> add_quiet_flag(CLI::App* command) {
  auto quiet = std::make_shared<bool>(false);
  add_quiet_flag(command, *quiet);
  return quiet;
}

// --json on a command whose result is always a JSON document: accepted, so that scripts can
// pass --json to every command that prints a result.
inline void add_json_always_flag(CLI::App* command) {
  command->add_flag("--json")->description("print the result as JSON (this command always does)");
}

}  // namespace evmdk::cli
