#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "commands.h"
#include "evmdk/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "erofs-vmdk: compose EROFS container layers into one read-only virtual disk, "
      "and mount them in the guest"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "erofs-vmdk " EVMDK_VERSION_STRING);
  evmdk::cli::register_vmdk_commands(app);
  evmdk::cli::register_host_commands(app);
  evmdk::cli::register_guest_commands(app);
  evmdk::cli::register_hook_commands(app);
  evmdk::cli::register_verify_commands(app);
  evmdk::cli::register_verity_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "erofs-vmdk: {}\n", error.what());
    return 1;
  }
  return 0;
}
