#pragma once
// `erofs-vmdk hook`: what a VM runtime under containerd calls with the snapshotter's mount
// list. Composes the read-only lower disk(s) with the compose library, prepares the writable
// ext4 upper (creating it as containerd's mount manager would), and returns the disks to
// attach plus the Storage list for the guest. Everything lives in <state-dir>/<id>/;
// `cleanup_hook` removes exactly that. See docs/runtime-integration.md and docs/storage-spec.md.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "evmdk/host/hook_plan.h"
#include "evmdk/storage_spec.h"

namespace evmdk::host {

inline constexpr const char* kHookOutputName = "hook.json";
inline constexpr const char* kHookStateName = "hook-state.json";
inline constexpr const char* kHookStorageName = "storage.json";

// Container ids become a directory name: 1..128 bytes of [A-Za-z0-9_.-], not starting with '.'
// or '-' (so "..", hidden names and options are impossible). Throws naming the id.
void validate_container_id(const std::string& id);

struct HookRequest {
  std::string id;
  std::string state_dir;
  std::vector<ContainerdMount> mounts;
};

// The printed document (also written to <state-dir>/<id>/hook.json):
//   {"id", "dir", "disks": [{"role", "path", "format", "read_only", "serial", "created",
//    "qemu": {blockdev-add, device_add, -blockdev/-drive args}}], "storages": [...],
//    "rootfs": {...guest templates...}, "shares": [...], "notes": [...]}
// Running it again with the same mount list returns the stored document unchanged; a different
// list for an existing id is an error. On any error nothing is left behind.
nlohmann::json run_hook(const HookRequest& request);

// dm-verity parameters for a layer, from containerd's sidecar JSON ({"roothash", "hashoffset"})
// and the dm-verity superblock at hashoffset inside the layer. Returned as X-kata.dmverity.*
// options. Throws naming the sidecar or layer.
std::vector<std::string> dmverity_options(const std::string& layer, const std::string& sidecar);

struct CleanupReport {
  bool existed = false;
  std::vector<std::string> removed;  // absolute paths
  std::vector<std::string> left;     // absolute paths not removed, with the reason
};
// Removes exactly what run_hook created under <state-dir>/<id>/; a second run finds nothing
// and succeeds. Never follows a symlink, never touches anything outside that directory.
CleanupReport cleanup_hook(const std::string& id, const std::string& state_dir);

}  // namespace evmdk::host
