// `erofs-vmdk hook --id CID --state-dir DIR [--mounts FILE|-]` and
// `erofs-vmdk hook cleanup --id CID --state-dir DIR`: a VM runtime's entry point for the
// containerd EROFS snapshotter's mount list (docs/runtime-integration.md).
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "documents.h"
#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"

namespace evmdk::cli {
namespace {

struct HookArgs {
  std::string id;
  std::string state_dir;
  std::string mounts = "-";
  std::string verity = "auto";
  std::string disk_format = "vmdk";
  bool allow_copy = false;
  std::string attach = "blk";
  std::string dax_fallback = "error";
  std::string cleanup_id;
  std::string cleanup_state_dir;
};

std::string read_input(const std::string& path) {
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
    return text.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read mount list {}", path);
  text << in.rdbuf();
  return text.str();
}

}  // namespace

void register_hook_commands(CLI::App& app) {
  auto args = std::make_shared<HookArgs>();
  auto* hook = app.add_subcommand(
      "hook", "Turn a containerd EROFS snapshotter mount list into disks and guest storages");
  hook->add_option("--id", args->id, "Container id (names the state subdirectory)");
  hook->add_option("--state-dir", args->state_dir, "Directory holding per-container hook state");
  hook->add_option("--mounts", args->mounts, "Mount list JSON file, or - for stdin")
      ->capture_default_str();
  hook->add_option("--verity", args->verity,
                   "dm-verity policy for layers without X-containerd.dmverity: off|auto|on")
      ->capture_default_str();
  hook->add_option("--disk-format", args->disk_format,
                   "lower disks as vmdk|raw (disk.img, layers shared by reflink)|auto (raw "
                   "where reflinks work, else vmdk)")
      ->check(CLI::IsMember({"vmdk", "raw", "auto"}))
      ->capture_default_str();
  hook->add_flag("--allow-copy", args->allow_copy,
                 "--disk-format raw: copy (and report) what cannot be shared by reflink");
  hook->add_option("--attach", args->attach,
                   "lower disks for blk (virtio-blk)|pmem (virtio-pmem with DAX, raw disk.img "
                   "padded to 2 MiB; see docs/pmem.md)")
      ->check(CLI::IsMember({"blk", "pmem"}))
      ->capture_default_str();
  hook->add_option("--dax-fallback", args->dax_fallback,
                   "--attach pmem: a guest mount without DAX is an error|warn")
      ->check(CLI::IsMember({"error", "warn"}))
      ->capture_default_str();
  add_json_always_flag(hook);
  auto hook_quiet = add_quiet_flag(hook);
  hook->require_subcommand(0, 1);

  auto* cleanup = hook->add_subcommand(
      "cleanup", "Remove exactly what `hook` created for a container (idempotent)");
  cleanup->add_option("--id", args->cleanup_id, "Container id")->required();
  cleanup->add_option("--state-dir", args->cleanup_state_dir, "Hook state directory")->required();
  add_json_always_flag(cleanup);
  auto cleanup_quiet = add_quiet_flag(cleanup);
  cleanup->callback([args, cleanup_quiet] {
    auto report = host::cleanup_hook(args->cleanup_id, args->cleanup_state_dir);
    if (!*cleanup_quiet)
      fmt::print("{}\n", documents::cleanup_report(args->cleanup_id, report).dump(2));
    if (!report.left.empty()) {
      for (const auto& item : report.left)
        fmt::print(stderr, "erofs-vmdk: not removed: {}\n", item);
      throw CLI::RuntimeError(1);
    }
  });

  hook->callback([args, hook, cleanup, hook_quiet] {
    if (cleanup->parsed()) return;
    if (args->id.empty()) throw Error("hook: --id is required");
    if (args->state_dir.empty()) throw Error("hook: --state-dir is required");
    host::HookRequest request;
    request.id = args->id;
    request.state_dir = args->state_dir;
    request.verity = host::parse_verity_policy(args->verity);
    request.disk_format = host::parse_disk_format(args->disk_format, "--disk-format");
    request.allow_copy = args->allow_copy;
    request.attach = host::parse_disk_attach(args->attach);
    const bool pmem = request.attach == host::DiskAttach::Pmem;
    if (pmem) {
      request.dax_fallback = host::parse_dax_fallback(args->dax_fallback);
      // --attach pmem implies raw images unless --disk-format says otherwise.
      if (hook->get_option("--disk-format")->count() == 0) {
        request.disk_format = host::DiskFormat::Raw;
      }
      if (request.disk_format == host::DiskFormat::Vmdk) {
        throw Error(
            "--attach pmem with --disk-format vmdk: QEMU maps a file into the guest, "
            "not a VMDK descriptor (use --disk-format raw or auto)");
      }
    } else if (hook->get_option("--dax-fallback")->count() > 0) {
      throw Error("--dax-fallback is only for --attach pmem");
    }
    const std::string origin = args->mounts == "-" ? std::string("<stdin>") : args->mounts;
    request.mounts = host::parse_mount_list_text(read_input(args->mounts), origin);
    auto document = host::run_hook(request);
    if (!*hook_quiet) fmt::print("{}\n", document.dump(2));
  });
}

}  // namespace evmdk::cli
