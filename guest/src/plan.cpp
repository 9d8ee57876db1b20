#include "evmdk/guest/plan.h"

#include <sys/mount.h>

#include <algorithm>
#include <array>
#include <limits>
#include <string_view>

#include "evmdk/checked_math.h"
#include "evmdk/contract/markers.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "pmem_device.h"

namespace evmdk::guest {
namespace {

std::string storage_name(size_t i, const Storage& storage) {
  return fmt::format("storage #{} '{}'", i, storage.source);
}

// The mount roles a storage can have; each has its own allowlist of plain options.
enum class Role { Lower, Upper, Share, OptionsOnly };

const char* role_name(Role role) {
  switch (role) {
    case Role::Lower: return "an EROFS lower";
    case Role::Upper: return "the ext4 upper";
    case Role::Share: return "a virtio-fs share";
    case Role::OptionsOnly: return "an options-only storage";
  }
  return "?";
}

struct FlagOption {
  std::string_view name;
  unsigned long flag;
  bool set;  // true: the option sets the flag; false: clears it
};

// Flags a layer mount may carry. dev, suid and (for layers) exec and rw widen what the
// container sees through a layer mount, so they are refused where the role forbids them.
constexpr std::array kFlagOptions = {
    FlagOption{"ro", MS_RDONLY, true},         FlagOption{"rw", MS_RDONLY, false},
    FlagOption{"nodev", MS_NODEV, true},       FlagOption{"dev", MS_NODEV, false},
    FlagOption{"nosuid", MS_NOSUID, true},     FlagOption{"suid", MS_NOSUID, false},
    FlagOption{"noexec", MS_NOEXEC, true},     FlagOption{"exec", MS_NOEXEC, false},
    FlagOption{"noatime", MS_NOATIME, true},   FlagOption{"nodiratime", MS_NODIRATIME, true},
    FlagOption{"relatime", MS_RELATIME, true}, FlagOption{"lazytime", MS_LAZYTIME, true},
    FlagOption{"sync", MS_SYNCHRONOUS, true},  FlagOption{"dirsync", MS_DIRSYNC, true}};

bool flag_allowed(Role role, std::string_view name) {
  switch (role) {
    case Role::Lower:
      return name != "rw" && name != "dev" && name != "suid" && name != "exec" && name != "sync" &&
             name != "dirsync" && name != "lazytime";
    case Role::Upper: return name != "dev" && name != "suid" && name != "exec";
    case Role::Share: return true;  // the share is the rootfs itself: its flags are the container's
    case Role::OptionsOnly: return name == "ro" || name == "rw";
  }
  return false;
}

bool one_of(std::string_view value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

// Filesystem data options that cannot name a path or a device, per role. Values are checked
// exactly (a ',' can never smuggle a second option in).
bool data_allowed(Role role, std::string_view option) {
  auto eq = option.find('=');
  std::string_view key = option.substr(0, eq);
  std::optional<std::string_view> value;
  if (eq != std::string_view::npos) value = option.substr(eq + 1);
  switch (role) {
    case Role::Lower:  // EROFS
      if (!value) return one_of(key, {"user_xattr", "nouser_xattr", "acl", "noacl"});
      return key == "cache_strategy" && one_of(*value, {"disabled", "readahead", "readaround"});
    case Role::Upper:  // ext4
      if (!value) {
        return one_of(key, {"discard", "nodiscard", "acl", "noacl", "user_xattr", "barrier",
                            "nobarrier", "auto_da_alloc", "noauto_da_alloc"});
      }
      if (key == "data") return one_of(*value, {"ordered", "writeback", "journal"});
      if (key == "errors") return one_of(*value, {"continue", "remount-ro"});
      if (key == "commit") return parse_decimal<unsigned>(*value, 86400).has_value();
      return false;
    case Role::Share:  // virtiofs
      if (!value) return key == "dax";
      return key == "dax" && one_of(*value, {"always", "never", "inode"});
    case Role::OptionsOnly: return false;
  }
  return false;
}

// A storage's plain options -> mount(2) flags and data, refusing anything not allowlisted for
// its role. X-* markers are the driver's own and never reach the kernel; "loop", "defaults",
// and (for a share) the host-side "bind"/"rbind" mean nothing here and are dropped.
MountOptions role_mount_options(Role role, size_t i, const Storage& storage) {
  MountOptions out;
  for (const auto& option : storage.options) {
    if (contract::is_marker(option) || option == "defaults" || option == "loop") continue;
    if (role == Role::Share && (option == "bind" || option == "rbind")) continue;
    auto flag = std::find_if(kFlagOptions.begin(), kFlagOptions.end(),
                             [&](const FlagOption& f) { return f.name == option; });
    if (flag != kFlagOptions.end()) {
      if (!flag_allowed(role, option)) {
        throw Error(
            "{}: option '{}' is not allowed on {} (its mount is always nodev,nosuid{}; "
            "the overlay's own flags decide what the container sees)",
            storage_name(i, storage), option, role_name(role), role == Role::Lower ? ",ro" : "");
      }
      out.flags = flag->set ? (out.flags | flag->flag) : (out.flags & ~flag->flag);
      continue;
    }
    if (!data_allowed(role, option)) {
      throw Error("{}: option '{}' is not an allowed mount option for {}", storage_name(i, storage),
                  option, role_name(role));
    }
    out.data += (out.data.empty() ? "" : ",") + option;
  }
  if (role == Role::Lower) out.flags |= MS_RDONLY | MS_NODEV | MS_NOSUID;
  if (role == Role::Upper) out.flags |= MS_NODEV | MS_NOSUID;
  return out;
}

std::optional<unsigned> unsigned_option(size_t i, const Storage& storage, std::string_view key,
                                        unsigned min, unsigned max) {
  auto values = option_values(storage.options, key);
  if (values.empty()) {
    if (has_option(storage.options, key)) {
      throw Error("{}: option {} needs a value", storage_name(i, storage), key);
    }
    return std::nullopt;
  }
  if (values.size() > 1) {
    throw Error("{}: option {} is given {} times", storage_name(i, storage), key, values.size());
  }
  return parse_decimal_or_throw<unsigned>(
      values.front(), fmt::format("{}: option {}", storage_name(i, storage), key), min, max);
}

using BindSpecs = std::vector<std::pair<size_t, std::string>>;  // storage #, spec

// A virtio-fs share is the whole rootfs: nothing else may be asked of it.
void choose_virtiofs_rootfs(Plan& plan, const std::vector<Storage>& storages,
                            const BindSpecs& binds) {
  const Storage& share = *plan.share;
  if (storages.size() != 1) {
    throw Error(
        "virtio-fs storage '{}' is the whole rootfs and must be the only storage (there "
        "are {})",
        share.source, storages.size());
  }
  if (!binds.empty()) {
    throw Error("virtio-fs storage '{}': option {}={} cannot apply to a shared directory",
                share.source, marker::kRootfsBind, binds.front().second);
  }
  if (!plan.mkdirs.empty()) {
    throw Error("virtio-fs storage '{}': mkdir directive '{}' has no mount to apply to",
                share.source, plan.mkdirs.front().first);
  }
  if (!plan.overlay_options.empty()) {
    throw Error("virtio-fs storage '{}': option {}={} without an overlay", share.source,
                marker::kOverlayOption, plan.overlay_options.front());
  }
  plan.kind = RootfsKind::VirtioFs;
  plan.read_only = plan.read_only || (plan.share_mount.flags & MS_RDONLY) != 0;
}

// A bind of {{ mount N }}[/path]: one value on every storage that gives it, naming a mount
// that exists.
void choose_bind_rootfs(Plan& plan, const std::vector<Storage>& storages, const BindSpecs& binds) {
  for (const auto& [i, spec] : binds) {
    if (spec != binds.front().second) {
      throw Error("storage #{} '{}': option {}={} contradicts {}={} on storage #{}", i,
                  storages[i].source, marker::kRootfsBind, spec, marker::kRootfsBind,
                  binds.front().second, binds.front().first);
    }
  }
  const auto& [i, spec] = binds.front();
  if (!plan.overlay_options.empty()) {
    throw Error("storage #{} '{}': option {}={} with {}={}: a bind rootfs is not an overlay", i,
                storages[i].source, marker::kRootfsBind, spec, marker::kOverlayOption,
                plan.overlay_options.front());
  }
  try {
    plan.bind = parse_bind_source(spec);
  } catch (const Error& error) {
    throw_with_context(error, fmt::format("storage #{} '{}': option {}", i, storages[i].source,
                                          marker::kRootfsBind));
  }
  if (plan.bind.mount_index == 0 && plan.upper == nullptr) {
    throw Error("storage #{} '{}': option {}={} names the upper, but there is no upper storage", i,
                storages[i].source, marker::kRootfsBind, spec);
  }
  if (plan.bind.mount_index > plan.lowers.size()) {
    throw Error(
        "storage #{} '{}': option {}={}: there is no mount {} (mount 0 is the upper, "
        "1..{} the lowers)",
        i, storages[i].source, marker::kRootfsBind, spec, plan.bind.mount_index,
        plan.lowers.size());
  }
  plan.bind_spec = spec;
  plan.kind = RootfsKind::Bind;
}

// An overlay of the lowers: writable, or read-only without an upper (one read-only lower is
// bound instead).
void choose_overlay_rootfs(Plan& plan, const std::vector<Storage>& storages) {
  if (plan.lowers.empty()) {
    throw Error(
        "no lower (erofs) storage among {} storages, and no {} or virtio-fs storage to "
        "make a rootfs without one",
        storages.size(), marker::kRootfsBind);
  }
  if (!plan.read_only) {
    plan.kind = RootfsKind::Overlay;
    return;
  }
  if (plan.upper != nullptr) {
    throw Error("{}=true with an upper storage '{}': a read-only rootfs has no upper",
                marker::kRootfsReadonly, plan.upper->source);
  }
  if (plan.lowers.size() == 1 && plan.overlay_options.empty()) {
    // One layer needs no overlay; kernels before 6.x refuse an overlay of a single lower
    // without an upper, and a read-only bind shows the same tree.
    plan.bind_spec = "{{ mount 1 }}";
    plan.bind = BindSource{1, {}};
    plan.kind = RootfsKind::Bind;
    return;
  }
  plan.kind = RootfsKind::ReadOnlyOverlay;
}

// Which rootfs the storages describe; refuses contradictory markers, naming them.
void choose_rootfs_kind(Plan& plan, const std::vector<Storage>& storages, const BindSpecs& binds) {
  if (plan.share != nullptr) {
    choose_virtiofs_rootfs(plan, storages, binds);
  } else if (!binds.empty()) {
    choose_bind_rootfs(plan, storages, binds);
  } else {
    choose_overlay_rootfs(plan, storages);
  }
}

LowerPlan plan_lower(size_t i, const Storage& storage, size_t lowers_so_far) {
  std::string name = storage_name(i, storage);
  if (storage.fstype != "erofs") {
    throw Error("{}: lower layers must be erofs, not '{}'", name, storage.fstype);
  }
  LowerPlan lower;
  lower.storage = &storage;
  lower.storage_number = i;
  lower.mount = role_mount_options(Role::Lower, i, storage);
  // Parsed now, so a malformed verity option refuses the mount before anything is done.
  lower.verity = verity_params_from_options(storage.options, name);
  try {
    auto slots =
        contract::decode_device_verity_options(storage.options, name, kMaxErofsExtraDevices);
    for (auto& [slot, params] : slots) lower.device_verity.emplace(slot, std::move(params));
  } catch (const Error& error) {
    throw_with_context(error, name);  // device_option_slots' own errors name no storage
  }
  // Partition numbers start at 1: 0 is refused as out of range, naming the option.
  lower.partition = unsigned_option(i, storage, marker::kPartitionNumber, 1,
                                    std::numeric_limits<uint32_t>::max());
  auto index = unsigned_option(i, storage, marker::kLayerIndex, 0, kMaxLowers - 1);
  if (!index && lower.partition) index = *lower.partition - 1;
  lower.index = index.value_or(static_cast<unsigned>(lowers_so_far));
  detail::plan_pmem_lower(name, lower);  // nvdimm source and DAX (pmem_device.cpp)
  try {
    check_disk_source(storage.source);  // a malformed gpt-disk-guid: refuses the mount now
  } catch (const Error& error) {
    throw_with_context(error, name);
  }
  return lower;
}

// containerd's idmap value: one or more <container>:<host>:<size> triples, colon-separated,
// every number 32-bit, sizes non-zero, no range running past 2^32.
bool id_map(std::string_view value) {
  std::vector<uint64_t> numbers;
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t colon = value.find(':', pos);
    if (colon == std::string_view::npos) colon = value.size();
    auto number = parse_decimal<uint64_t>(value.substr(pos, colon - pos),
                                          std::numeric_limits<uint32_t>::max());
    if (!number || numbers.size() >= 3 * 64) return false;
    numbers.push_back(*number);
    pos = colon + 1;
  }
  if (numbers.empty() || numbers.size() % 3 != 0) return false;
  for (size_t i = 0; i < numbers.size(); i += 3) {
    uint64_t limit = uint64_t{1} << 32;
    if (numbers[i + 2] == 0 || numbers[i] + numbers[i + 2] > limit ||
        numbers[i + 1] + numbers[i + 2] > limit) {
      return false;
    }
  }
  return true;
}

}  // namespace

const char* kind_name(RootfsKind kind) {
  switch (kind) {
    case RootfsKind::Overlay: return "overlay";
    case RootfsKind::ReadOnlyOverlay: return "read-only overlay";
    case RootfsKind::Bind: return "bind";
    case RootfsKind::VirtioFs: return "virtio-fs";
  }
  return "?";
}

void check_overlay_option(const std::string& option, const std::string& context) {
  auto eq = option.find('=');
  std::string_view key = std::string_view(option).substr(0, eq);
  bool ok = false;
  if (eq == std::string::npos) {
    ok = key == "volatile" || key == "userxattr" || key == "ro";
  } else {
    std::string_view value = std::string_view(option).substr(eq + 1);
    if (key == "redirect_dir") ok = one_of(value, {"on", "off", "follow", "nofollow"});
    if (key == "metacopy" || key == "index" || key == "nfs_export")
      ok = one_of(value, {"on", "off"});
    if (key == "xino") ok = one_of(value, {"on", "off", "auto"});
    if (key == "uidmap" || key == "gidmap") ok = id_map(value);
  }
  if (!ok) {
    throw Error(
        "{}: option {}={} is refused: only redirect_dir=, metacopy=, index=, xino=, "
        "nfs_export=, uidmap=, gidmap= (with their documented values), volatile, userxattr "
        "and ro may reach the overlay; the driver alone names its lower, upper and work "
        "directories",
        context, marker::kOverlayOption, option);
  }
}

namespace {

// The markers any storage may carry about the rootfs as a whole: mkdir directives, overlay
// options, rootfs-bind and rootfs-readonly.
void collect_rootfs_markers(Plan& plan, BindSpecs& binds, size_t i, const Storage& storage) {
  std::string name = storage_name(i, storage);
  for (auto key : {marker::kMkdirPath, marker::kContainerdMkdirPath}) {
    for (const auto& spec : option_values(storage.options, key)) {
      plan.mkdirs.emplace_back(spec, parse_mkdir_directive(spec));
    }
  }
  for (const auto& option : option_values(storage.options, marker::kOverlayOption)) {
    check_overlay_option(option, name);
    plan.overlay_options.push_back(option);
  }
  if (std::find(storage.options.begin(), storage.options.end(),
                std::string(marker::kOverlayOption)) != storage.options.end()) {
    throw Error("{}: option {} needs a value", name, marker::kOverlayOption);
  }
  for (const auto& spec : option_values(storage.options, marker::kRootfsBind))
    binds.emplace_back(i, spec);
  for (const auto& value : option_values(storage.options, marker::kRootfsReadonly)) {
    if (value != "true" && value != "false") {
      throw Error("storage #{} '{}': option {}={} must be true or false", i, storage.source,
                  marker::kRootfsReadonly, value);
    }
    plan.read_only = plan.read_only || value == "true";
  }
  if (std::find(storage.options.begin(), storage.options.end(),
                std::string(marker::kRootfsReadonly)) != storage.options.end()) {
    throw Error("storage #{} '{}': option {} needs a value (=true)", i, storage.source,
                marker::kRootfsReadonly);
  }
}

bool is_share(const Storage& storage) {
  return storage.driver == "virtio-fs" || storage.fstype == "virtiofs";
}

void plan_share(Plan& plan, size_t i, const Storage& storage) {
  if (storage.driver != "virtio-fs" || storage.fstype != "virtiofs") {
    throw Error(
        "storage #{} '{}': a shared directory needs driver 'virtio-fs' and fstype "
        "'virtiofs', not '{}' / '{}'",
        i, storage.source, storage.driver, storage.fstype);
  }
  if (storage.source.empty())
    throw Error("storage #{}: virtio-fs storage without a tag (source)", i);
  if (!storage.mount_point.empty() && storage.mount_point != "rootfs") {
    throw Error(
        "storage #{} '{}': a virtio-fs storage is mounted as the rootfs; mount_point "
        "'{}' is not supported",
        i, storage.source, storage.mount_point);
  }
  if (plan.share != nullptr)
    throw Error("storage #{} '{}': a second virtio-fs storage", i, storage.source);
  plan.share = &storage;
  plan.share_mount = role_mount_options(Role::Share, i, storage);
}

void plan_upper(Plan& plan, size_t i, const Storage& storage) {
  std::string name = storage_name(i, storage);
  if (has_option(storage.options, marker::kOverlayLower)) {
    throw Error("{}: both {} and {}", name, marker::kOverlayUpper, marker::kOverlayLower);
  }
  if (plan.upper != nullptr)
    throw Error("storage #{} '{}': a second overlay upper", i, storage.source);
  // The role fixes the filesystem: a tmpfs (or anything else) instead of the upper disk
  // would put the container's writes somewhere the host chose.
  if (!storage.fstype.empty() && storage.fstype != "ext4") {
    throw Error("{}: the overlay upper must be ext4, not '{}'", name, storage.fstype);
  }
  plan.upper = &storage;
  plan.upper_mount = role_mount_options(Role::Upper, i, storage);
}

// e.g. an overlay storage that only carries options (markers)
void check_options_only(size_t i, const Storage& storage) {
  if (!storage.fstype.empty() && storage.fstype != "overlay") {
    throw Error(
        "{}: fstype '{}' is neither an EROFS lower, the ext4 upper ({}), a virtio-fs "
        "share nor an overlay storage",
        storage_name(i, storage), storage.fstype, marker::kOverlayUpper);
  }
  role_mount_options(Role::OptionsOnly, i, storage);
}

// The storage's role: a virtio-fs share, the upper, a lower, or options only.
void classify_storage(Plan& plan, size_t i, const Storage& storage) {
  if (is_share(storage)) return plan_share(plan, i, storage);
  if (has_option(storage.options, marker::kOverlayUpper)) return plan_upper(plan, i, storage);
  bool lower = has_option(storage.options, marker::kOverlayLower) || storage.fstype == "erofs";
  if (!lower) return check_options_only(i, storage);
  if (plan.lowers.size() >= kMaxLowers) {
    throw Error("{}: more than {} lower layers", storage_name(i, storage), kMaxLowers);
  }
  plan.lowers.push_back(plan_lower(i, storage, plan.lowers.size()));
}

void sort_lowers_by_index(Plan& plan) {
  std::sort(plan.lowers.begin(), plan.lowers.end(),
            [](const LowerPlan& a, const LowerPlan& b) { return a.index < b.index; });
  for (size_t i = 0; i < plan.lowers.size(); ++i) {
    if (plan.lowers[i].index != i) {
      throw Error(
          "lower layer indexes must be 0..{} without gaps or duplicates; storage '{}' has "
          "index {} where {} was expected",
          plan.lowers.size() - 1, plan.lowers[i].storage->source, plan.lowers[i].index, i);
    }
  }
}

// A read-only upper (the storage's 'ro': block mode's read-only view without parents, whose
// disk is attached read-only) can only be seen through a read-only bind of it.
void check_read_only_upper(const Plan& plan) {
  if (plan.upper == nullptr || (plan.upper_mount.flags & MS_RDONLY) == 0) return;
  const char* why = nullptr;
  if (plan.kind == RootfsKind::Overlay) {
    why = "a writable overlay needs a writable upper";
  } else if (plan.kind == RootfsKind::Bind && plan.bind.mount_index == 0 && !plan.read_only) {
    why = "its bind must be read-only too";
  }
  if (why != nullptr) {
    throw Error("upper storage '{}' is read-only (option 'ro'): {} ({}=true)", plan.upper->source,
                why, marker::kRootfsReadonly);
  }
}

void check_mkdir_targets(const Plan& plan) {
  for (const auto& [spec, directive] : plan.mkdirs) {
    if (directive.mount_index > plan.lowers.size()) {
      throw Error(
          "mkdir directive '{}': there is no mount {} (mount 0 is the upper, 1..{} the "
          "lowers)",
          spec, directive.mount_index, plan.lowers.size());
    }
    // Only the writable overlay has a memory-backed upper when no upper storage is given.
    if (directive.mount_index == 0 && plan.upper == nullptr && plan.kind != RootfsKind::Overlay) {
      throw Error(
          "mkdir directive '{}': there is no upper storage for {{{{ mount 0 }}}} (the "
          "rootfs is a {})",
          spec, kind_name(plan.kind));
    }
  }
}

}  // namespace

Plan make_plan(const std::vector<Storage>& storages) {
  Plan plan;
  BindSpecs binds;
  for (size_t i = 0; i < storages.size(); ++i) {
    collect_rootfs_markers(plan, binds, i, storages[i]);
    classify_storage(plan, i, storages[i]);
  }
  sort_lowers_by_index(plan);
  choose_rootfs_kind(plan, storages, binds);
  check_read_only_upper(plan);
  check_mkdir_targets(plan);
  return plan;
}

}  // namespace evmdk::guest
