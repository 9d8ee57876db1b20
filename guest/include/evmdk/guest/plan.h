#pragma once
// Storages -> a validated mount plan, before anything is touched. The storages come from the
// host, which the guest does not trust (docs/guest.md "Threat model"): every option a storage
// carries is checked against an allowlist for its role, every number is range-checked, the
// filesystem type is fixed by the role (EROFS lowers, ext4 upper, virtiofs share), and overlay
// options that could name a path are refused. Errors name the storage and the option at fault.
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "evmdk/contract/pmem.h"
#include "evmdk/guest/bind_source.h"
#include "evmdk/guest/mkdir_directive.h"
#include "evmdk/guest/verity.h"
#include "evmdk/storage_spec.h"

namespace evmdk::guest {

// The rootfs markers (X-erofs-vmdk.rootfs-bind, -rootfs-readonly, -overlay-option) are
// marker::kRootfsBind, kRootfsReadonly and kOverlayOption in contract/markers.h.

// Most lowers one rootfs may have (an index beyond it is refused before anything is mounted).
inline constexpr unsigned kMaxLowers = 4096;

// What mount(2) gets for one layer mount: flags and the (allowlisted) data string.
struct MountOptions {
  unsigned long flags = 0;
  std::string data;
};

struct LowerPlan {
  unsigned index = 0;  // 0 = top
  const Storage* storage = nullptr;
  size_t storage_number = 0;  // position in the storage list, for errors
  std::optional<unsigned> partition;
  std::optional<VerityParams> verity;  // the storage's own device (the fsmeta on a flat disk)
  // Flat (fsmeta) disk: dm-verity of extra device slots (1 = the first extra device), from
  // X-erofs-vmdk.device.<slot>.dmverity*; hash_offset is a byte offset on the disk.
  std::map<unsigned, VerityParams> device_verity;
  MountOptions mount;  // always MS_RDONLY | MS_NODEV | MS_NOSUID
  // A virtio-pmem lower (driver nvdimm): where its device is found, and whether it is read
  // through DAX (then mount.data carries dax=always, and there is no dm-verity).
  std::optional<contract::PmemSource> pmem;
  std::optional<contract::DaxOptions> dax;
};

// What the rootfs is (docs/runtime-integration.md section 3 lists the hook's shapes).
enum class RootfsKind {
  Overlay,          // lowers + ext4 or tmpfs upper, writable
  ReadOnlyOverlay,  // lowers only (a view of several parents)
  Bind,             // a bind of {{ mount N }} or {{ mount 0 }}/path
  VirtioFs,         // a host directory shared over virtio-fs
};
const char* kind_name(RootfsKind kind);

struct Plan {
  std::vector<LowerPlan> lowers;  // sorted by index
  const Storage* upper = nullptr;
  MountOptions upper_mount;                  // always MS_NODEV | MS_NOSUID; fstype ext4
  std::vector<std::string> overlay_options;  // allowlisted, never naming a path
  std::vector<std::pair<std::string, MkdirDirective>> mkdirs;  // spec, parsed
  RootfsKind kind = RootfsKind::Overlay;
  bool read_only = false;
  std::string bind_spec;  // as given (or synthesised for a read-only single lower)
  BindSource bind;
  const Storage* share = nullptr;  // the virtio-fs storage
  MountOptions share_mount;
};

// Classifies and validates `storages` (which must outlive the plan: it points into them).
// Throws evmdk::Error naming the storage (#index 'source') and the option or rule at fault.
Plan make_plan(const std::vector<Storage>& storages);
// A temporary would be gone before the plan is used: refused at compile time.
Plan make_plan(std::vector<Storage>&& storages) = delete;

// Checks one X-erofs-vmdk.overlay-option value against the allowlist (redirect_dir, metacopy,
// index, xino, nfs_export with their documented values; uidmap/gidmap as containerd's
// <container>:<host>:<size> triples; volatile, userxattr, ro as flags); throws naming `context`
// and the option otherwise.
void check_overlay_option(const std::string& option, const std::string& context);

}  // namespace evmdk::guest
