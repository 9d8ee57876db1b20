#pragma once
// `erofs-vmdk hook`: what a VM runtime under containerd calls with the snapshotter's mount
// list. Composes the read-only lower disk(s) with the compose library, prepares the writable
// ext4 upper (creating it as containerd's mount manager would), and returns the disks to
// attach plus the Storage list for the guest. Everything lives in <state-dir>/<id>/;
// `cleanup_hook` removes exactly that. See docs/runtime-integration.md and docs/storage-spec.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/hook/hook_plan.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/storage_spec.h"

namespace evmdk::host {

inline constexpr const char* kHookOutputName = "hook.json";
inline constexpr const char* kHookStateName = "hook-state.json";
inline constexpr const char* kHookStorageName = "storage.json";

// Container ids follow the one rule the guest uses too: evmdk::contract::validate_container_id
// (common/include/evmdk/contract/container_id.h).

struct HookRequest {
  std::string id;
  std::string state_dir;
  std::vector<ContainerdMount> mounts;
  // A layer with X-containerd.dmverity= always gets X-kata.dmverity.* options (a broken sidecar
  // or tree is an error) unless off; other layers follow the policy (auto: a <layer>.dmverity
  // next to the layer is used; on: a layer without one is an error). docs/verity.md.
  VerityPolicy verity = VerityPolicy::kAuto;
  // The gpt/flat lower disks as VMDK descriptors or raw images (disk.img, shared by reflink:
  // auto needs the state directory on the snapshotter's XFS/btrfs); see compose's --format.
  DiskFormat disk_format = DiskFormat::Vmdk;
  bool allow_copy = false;
  // Pmem: every lower disk a raw image for virtio-pmem with DAX (compose's --attach pmem;
  // disk_format must then be Raw or Auto). dm-verity is not used (verity on is refused, a
  // layer with X-containerd.dmverity too); the upper stays virtio-blk. See docs/pmem.md.
  DiskAttach attach = DiskAttach::Blk;
  contract::DaxFallback dax_fallback = contract::DaxFallback::Error;
};

// The printed document (also written to <state-dir>/<id>/hook.json):
//   {"id", "dir", "disks": [{"role", "path", "format", "read_only", "serial", "created",
//    "qemu": {blockdev-add, device_add, -blockdev/-drive args}}], "storages": [...],
//    "rootfs": {...guest templates...}, "shares": [...], "notes": [...]}
// Running it again with the same mount list returns the stored document unchanged; a different
// list for an existing id is an error. On any error nothing is left behind.
nlohmann::json run_hook(const HookRequest& request);

// <state-dir>/<id>/hook-state.json, typed. Written by run_hook ("building" before anything is
// made, "complete" with every file when done) and read back by a retry and by cleanup_hook.
// The file lives in a directory others may write to, so parsing is strict about types and
// size; names are kept as written and cleanup_hook refuses to act on an unsafe one.
struct HookState {
  uint64_t version = 1;
  std::string id;
  std::string status;              // "building" or "complete"
  std::string input_sha256;        // of the mount list and the verity policy
  std::vector<std::string> dirs;   // subdirectories the run created
  std::vector<std::string> files;  // "<name>" or "<dir>/<name>" (complete only)
  bool operator==(const HookState&) const = default;
};
inline constexpr size_t kMaxHookStateBytes = 1u << 20;
// Throws evmdk::Error naming `path` and the field for invalid JSON, a wrong type, an unknown
// status or a file over kMaxHookStateBytes.
HookState parse_hook_state(std::string_view text, const std::string& path);
nlohmann::json to_json(const HookState& state);

struct CleanupReport {
  bool existed = false;
  std::vector<std::string> removed;  // absolute paths
  std::vector<std::string> left;     // what the hook made but could not remove, with the reason
  std::vector<std::string> kept;     // directories kept because they hold files not ours
};
// Removes exactly what run_hook created under <state-dir>/<id>/; a second run finds nothing
// and succeeds. Never follows a symlink, never touches anything outside that directory.
CleanupReport cleanup_hook(const std::string& id, const std::string& state_dir);

}  // namespace evmdk::host
