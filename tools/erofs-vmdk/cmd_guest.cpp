// erofs-vmdk guest mount|teardown|status: thin over evmdk::guest (guest/include/evmdk/guest).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>

#include "commands.h"
#include "documents.h"
#include "evmdk/error.h"
#include "evmdk/guest/driver.h"

namespace evmdk::cli {
namespace {

std::string read_input(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path);
  if (!in) throw Error("cannot read storages file {}", path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Test hook for crash injection: EVMDK_GUEST_CRASH_AFTER=<step> (see docs/guest.md).
std::string crash_hook() {
  const char* value = std::getenv("EVMDK_GUEST_CRASH_AFTER");
  return value ? value : "";
}

struct GuestOptions {
  std::string storages_path;
  std::string container_id;
  std::string rootfs;
  std::string base_dir = guest::kDefaultBaseDir;
  unsigned timeout_ms = 10000;
  unsigned parallel = 4;
  std::vector<std::string> cgroups;
  unsigned kill_timeout_ms = 5000;
  // The guest's integrity policy (guest/policy.h): a file, tightened by flags.
  std::string policy_path;
  bool require_verity = false;
  std::vector<std::string> verity_algorithms;
  std::vector<std::string> root_hashes;
  std::optional<uint64_t> max_upper_bytes;
};

// The policy file given with --policy, else /etc/erofs-vmdk/policy.json when the image has one,
// else the built-in default; then the flags on top (they only add rules or narrow lists).
guest::Policy effective_policy(const GuestOptions& options) {
  nlohmann::json flags = nlohmann::json::object();
  if (options.require_verity) flags["require_verity"] = true;
  if (!options.verity_algorithms.empty()) flags["verity_algorithms"] = options.verity_algorithms;
  if (!options.root_hashes.empty()) flags["root_hashes"] = options.root_hashes;
  if (options.max_upper_bytes) flags["max_upper_bytes"] = *options.max_upper_bytes;
  return guest::effective_policy(options.policy_path, flags);
}

}  // namespace

void register_guest_commands(CLI::App& app) {
  auto* guest_cmd = app.add_subcommand("guest",
                                       "guest storage driver: mount the layers and the "
                                       "upper as the rootfs (overlay, read-only overlay, "
                                       "bind, or virtio-fs share), tear it down");
  guest_cmd->require_subcommand(1);
  auto options = std::make_shared<GuestOptions>();

  auto* mount = guest_cmd->add_subcommand("mount",
                                          "mount lowers, upper and the rootfs the "
                                          "storages describe");
  mount
      ->add_option("-s,--storages", options->storages_path,
                   "storage.json (a JSON array of "
                   "Storage objects), or - for stdin")
      ->required();
  mount->add_option("-i,--id", options->container_id, "container id")->required();
  mount->add_option("-r,--rootfs", options->rootfs, "the rootfs mount point")->required();
  mount
      ->add_option("-b,--base", options->base_dir,
                   "base directory for <id>/multi-layer and "
                   "journals")
      ->capture_default_str();
  mount
      ->add_option("--timeout-ms", options->timeout_ms,
                   "how long to wait for disks and "
                   "partitions")
      ->capture_default_str();
  mount->add_option("--parallel", options->parallel, "lowers mounted concurrently")
      ->capture_default_str();
  mount->add_option("--policy", options->policy_path,
                    fmt::format("the guest's integrity policy (JSON; default: {} when present)",
                                guest::kDefaultPolicyPath));
  mount->add_flag("--require-verity", options->require_verity,
                  "refuse any lower (or flat-image "
                  "device) without dm-verity, and any virtio-fs rootfs");
  mount->add_option("--verity-algorithm", options->verity_algorithms,
                    "an allowed dm-verity hash "
                    "(repeat; default sha256 and sha512)");
  mount->add_option("--root-hash", options->root_hashes,
                    "an allowed dm-verity root hash (repeat; "
                    "default: any)");
  mount->add_option("--max-upper-bytes", options->max_upper_bytes, "largest allowed upper disk");
  add_json_always_flag(mount);
  auto mount_quiet = add_quiet_flag(mount);
  mount->callback([options, mount_quiet] {
    guest::MountRequest request;
    try {
      request.storages =
          storages_from_json(nlohmann::json::parse(read_input(options->storages_path)));
    } catch (const nlohmann::json::exception& error) {
      throw Error("{}: not valid JSON: {}", options->storages_path, error.what());
    } catch (const Error& error) {
      throw Error("{}: {}", options->storages_path, error.what());
    }
    request.container_id = options->container_id;
    request.rootfs = options->rootfs;
    request.base_dir = options->base_dir;
    request.device_timeout = std::chrono::milliseconds(options->timeout_ms);
    request.parallel_mounts = options->parallel;
    request.crash_after = crash_hook();
    request.policy = effective_policy(*options);
    guest::MountResult mounted = guest::mount_rootfs(request);
    for (const auto& warning : mounted.warnings)
      fmt::print(stderr, "erofs-vmdk: warning: {}\n", warning);
    auto result = documents::mount_result(mounted);
    if (!*mount_quiet) fmt::print("{}\n", result.dump(2));
  });

  auto* teardown = guest_cmd->add_subcommand(
      "teardown",
      "kill the container, remove its cgroups, unmount top-down, remove what mount "
      "created; exits non-zero naming whatever could not be cleaned");
  teardown->add_option("-i,--id", options->container_id, "container id")->required();
  teardown->add_option("-r,--rootfs", options->rootfs,
                       "the rootfs mount point (default: from the journal)");
  teardown->add_option("-b,--base", options->base_dir, "base directory")->capture_default_str();
  teardown->add_option("-c,--cgroup", options->cgroups,
                       "a cgroup directory of the container "
                       "(repeat for each v1 hierarchy)");
  teardown
      ->add_option("--kill-timeout-ms", options->kill_timeout_ms,
                   "bound for killing the "
                   "processes and for removing the cgroups")
      ->capture_default_str();
  add_json_always_flag(teardown);
  auto teardown_quiet = add_quiet_flag(teardown);
  teardown->callback([options, teardown_quiet] {
    guest::TeardownRequest request;
    request.container_id = options->container_id;
    request.rootfs = options->rootfs;
    request.base_dir = options->base_dir;
    request.cgroups = options->cgroups;
    request.kill_timeout = std::chrono::milliseconds(options->kill_timeout_ms);
    request.cgroup_remove_timeout = std::chrono::milliseconds(options->kill_timeout_ms);
    request.crash_after = crash_hook();
    auto report = guest::teardown_rootfs(request);
    if (!*teardown_quiet) fmt::print("{}\n", report.to_json().dump(2));
    for (const auto& warning : report.warnings)
      fmt::print(stderr, "erofs-vmdk: warning: {}\n", warning);
    if (!report.clean()) {
      std::fflush(stdout);
      for (const auto& problem : report.problems) {
        fmt::print(stderr, "erofs-vmdk: not cleaned: {}\n", problem);
      }
      throw CLI::RuntimeError(1);
    }
  });

  auto* status = guest_cmd->add_subcommand("status", "print the journal and what is mounted");
  status->add_option("-i,--id", options->container_id, "container id")->required();
  status->add_option("-b,--base", options->base_dir, "base directory")->capture_default_str();
  add_json_always_flag(status);
  status->callback([options] {
    fmt::print("{}\n", guest::rootfs_status(options->base_dir, options->container_id).dump(2));
  });
}

}  // namespace evmdk::cli
