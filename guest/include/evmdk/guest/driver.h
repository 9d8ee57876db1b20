#pragma once
// The guest storage driver: mounts the lower-N EROFS layers and the upper, builds the rootfs
// from them, and tears it all down again in order. Layout under <base>/<id>/multi-layer:
// upper (ext4, or a tmpfs when a writable overlay has no upper storage), lower-0 ..
// lower-(N-1) (lower-0 = top layer). The rootfs is, as the storages say (docs/guest.md): an
// overlay upperdir=upper/upper, workdir=upper/work; a read-only overlay of the lowers; a bind
// of X-erofs-vmdk.rootfs-bind ({{ mount N }} or {{ mount 0 }}/path, read-only with
// X-erofs-vmdk.rootfs-readonly=true); or a virtio-fs share mounted directly.
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "evmdk/guest/policy.h"
#include "evmdk/storage_spec.h"

namespace evmdk::guest {

inline constexpr const char* kDefaultBaseDir = "/run/erofs-vmdk";

struct MountRequest {
  std::vector<Storage> storages;
  std::string container_id;
  std::string rootfs;  // the overlay's mount point (created when missing)
  std::string base_dir = kDefaultBaseDir;
  std::chrono::milliseconds device_timeout{10000};  // waiting for disks and partitions
  unsigned parallel_mounts = 4;                     // lowers mounted concurrently
  // Multi-device (fsmeta) lowers: true tries the kernel's flat-device mode first and falls
  // back to loop slices + device= when the kernel refuses; false goes straight to slices.
  bool try_flat_device_mode = true;
  // Overlay: true passes lowers one by one (fsconfig lowerdir+, kernel 6.8+) when the kernel
  // knows it; false always uses one page of mount(2) data with relative paths (as on 6.1).
  bool try_lowerdir_plus = true;
  // Test hook: the process SIGKILLs itself right after the named step (see docs/guest.md).
  std::string crash_after;
  // The guest's own integrity rules (policy.h); the storages cannot relax them.
  Policy policy;
};

struct MountResult {
  std::string rootfs;
  // "overlay", "read-only overlay" (lowers only), "bind" (of bind_source), "virtio-fs"
  std::string rootfs_kind;
  bool read_only = false;
  std::string bind_source;          // the resolved directory a bind rootfs shows
  std::string virtiofs_tag;         // the share a virtio-fs rootfs mounts
  std::string upper;                // the upper's mount point; empty when there is none
  std::vector<std::string> lowers;  // lower-0 first
  std::vector<std::string> loop_devices;
  std::vector<std::string> verity_devices;  // dm names, for lowers with X-kata.dmverity-enabled
  bool flat_device_mode = false;            // a multi-device lower mounted without loop slices
  std::string overlay_method;               // "fsconfig lowerdir+" or "mount(2) relative paths"
  // DAX lowers (X-erofs-vmdk.dax=always): mount point -> "always" (mountinfo confirms it) or
  // "fallback" (allowed by X-erofs-vmdk.dax-fallback=warn; the warning says why).
  std::map<std::string, std::string> dax;
  std::vector<std::string> warnings;
  // Wall-clock milliseconds per step, in order: "dirs", "lowers", "upper", "mkdir", "rootfs";
  // where the time to a ready rootfs goes.
  std::vector<std::pair<std::string, double>> step_ms;
};

// Mounts everything or nothing: a failure rolls back what was done and rethrows.
MountResult mount_rootfs(const MountRequest& request);

struct TeardownRequest {
  std::string container_id;
  std::string rootfs;  // optional when the journal names it
  std::string base_dir = kDefaultBaseDir;
  std::vector<std::string> cgroups;  // the container's cgroup directories (v1 and/or v2)
  std::chrono::milliseconds kill_timeout{5000};
  std::chrono::milliseconds cgroup_remove_timeout{5000};
  std::chrono::milliseconds unmount_busy_timeout{2000};  // before falling back to MNT_DETACH
  std::string crash_after;                               // test hook, as for mount
};

struct TeardownReport {
  std::vector<std::string> actions;   // what was done, in order
  std::vector<std::string> warnings;  // e.g. lazy detaches
  std::vector<std::string> problems;  // what could not be cleaned
  bool clean() const { return problems.empty(); }
  nlohmann::json to_json() const;
};

// Kills, removes cgroups, unmounts top-down, releases loops, removes the empty directories it
// created. Continues past failures; idempotent.
TeardownReport teardown_rootfs(const TeardownRequest& request);

// The journal (if any) and what is mounted now under the container's directories.
nlohmann::json rootfs_status(const std::string& base_dir, const std::string& container_id);

}  // namespace evmdk::guest
