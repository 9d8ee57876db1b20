#pragma once
// The containerd side of `erofs-vmdk hook`: parse the mount list a snapshotter returns
// (containerd's Mount: type, source, target, options; capitalised or lower-case field names)
// and classify it into what the VM needs: read-only EROFS lowers (guest order, lower-0 = top),
// an optional ext4 upper disk, and how the guest builds the rootfs. Pure: no file is touched.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::host {

struct ContainerdMount {
  std::string type;
  std::string source;
  std::string target;
  std::vector<std::string> options;
};

// Accepts a JSON array of mounts, or an object with a "mounts"/"Mounts" array. Errors name the
// mount index and the field.
std::vector<ContainerdMount> parse_mount_list(const nlohmann::json& json);
std::vector<ContainerdMount> parse_mount_list_text(std::string_view text,
                                                   const std::string& origin);

// One read-only lower as the guest sees it.
struct PlannedLower {
  size_t mount_index = 0;  // index in the containerd list
  std::string image;       // layer.erofs, or fsmeta.erofs for a flat group
  // containerd 2.1: the host lowerdir this layer arrived as (its own EROFS mount of
  // <snapshot>/layer.erofs); `image` stays empty until the hook maps it to that file through
  // the mount table (resolve_host_lowerdirs), since planning touches no file.
  std::string host_directory;
  std::vector<std::string> devices;  // device= blobs of an fsmeta mount, in the given order
  std::optional<std::string> dmverity_sidecar;  // X-containerd.dmverity=<path>
  std::vector<std::string> mount_options;       // other plain options passed to the guest

  bool is_fsmeta() const { return !devices.empty(); }
};

// The ext4 upper (block mode): a raw disk attached read-write -- or, for a read-only view
// without parents (`ro` on the mount), attached read-only behind a read-only bind.
struct PlannedUpper {
  size_t mount_index = 0;
  std::string image;                  // rwlayer.img
  std::optional<uint64_t> mkfs_size;  // set for mkfs/ext4: create when missing
  bool read_only = false;
};

enum class RootfsKind {
  Overlay,   // overlay of the lowers (+ upper)
  Bind,      // bind mount of a guest path (bind_source)
  HostShare  // a host directory (containerd `bind` of fs/), shared into the guest
};

enum class UpperKind {
  Ext4Disk,     // block mode: X-kata.overlay-upper storage
  GuestMemory,  // directory mode: the host upperdir is not visible to the VM
  None          // read-only rootfs
};

struct HookPlan {
  std::vector<PlannedLower> lowers;  // guest order: [0] = top = lower-0
  std::optional<PlannedUpper> upper;
  RootfsKind rootfs = RootfsKind::Overlay;
  UpperKind upper_kind = UpperKind::None;
  bool read_only = false;

  // Guest templates ({{ mount 0 }} = upper root, {{ mount N }} = lower-(N-1)).
  std::string guest_lowerdir;                // "{{ overlay 1 N }}" or "{{ mount 1 }}" (Overlay)
  std::string guest_upperdir;                // "{{ mount 0 }}/upper" (Ext4Disk)
  std::string guest_workdir;                 // "{{ mount 0 }}/work" (Ext4Disk)
  std::string bind_source;                   // Bind: guest template path
  std::vector<std::string> mkdir_specs;      // renumbered X-containerd.mkdir.path values
  std::vector<std::string> overlay_options;  // passed through (uidmap=, index=off, ...)
  std::vector<std::string> bind_options;     // Bind / HostShare: rbind, ... (not ro/rw)

  // Directory mode: the host paths containerd named (not visible in the guest).
  std::string host_upperdir;
  std::string host_workdir;
  // HostShare: the host directory and whether it is writable.
  std::string host_share_source;
};

// Classifies every shape the EROFS snapshotter returns (see docs/runtime-integration.md).
// Throws evmdk::Error naming the mount index and type for a shape it does not understand.
HookPlan plan_mounts(const std::vector<ContainerdMount>& mounts);

// Template helpers (exposed for tests). `guest_index_of` maps a containerd mount index to the
// guest's template number, or nullopt when the mount has none.
struct TemplateMap {
  std::vector<std::optional<size_t>> guest_index_of;
};
// Rewrites every {{ mount N }} and {{ overlay A B }} in `text` to guest numbering. Throws,
// naming `context`, for an unknown template or a mount the guest cannot see.
std::string renumber_templates(const std::string& text, const TemplateMap& map,
                               const std::string& context);

}  // namespace evmdk::host
