#include "evmdk/host/hook/hook_plan.h"

#include <charconv>
#include <set>

#include "evmdk/contract/markers.h"
#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"
#include "evmdk/host/hook/host_lowerdirs.h"

namespace evmdk::host {
namespace {

using nlohmann::json;

// containerd's Go struct has no JSON tags (Type, Source, ...); its API types use lower case.
const json* field(const json& object, const char* lower, const char* capitalised, size_t index) {
  auto a = object.find(lower);
  auto b = object.find(capitalised);
  if (a != object.end() && b != object.end()) {
    throw Error("mount {}: both '{}' and '{}' given", index, lower, capitalised);
  }
  if (a != object.end()) return &*a;
  if (b != object.end()) return &*b;
  return nullptr;
}

std::string string_field(const json& object, const char* lower, const char* capitalised,
                         size_t index) {
  const json* value = field(object, lower, capitalised, index);
  if (value == nullptr || value->is_null()) return {};
  if (!value->is_string()) throw Error("mount {}: field '{}' must be a string", index, lower);
  return value->get<std::string>();
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::optional<std::string> value_after(std::string_view option, std::string_view key) {
  if (option.size() > key.size() && starts_with(option, key) && option[key.size()] == '=') {
    return std::string(option.substr(key.size() + 1));
  }
  return std::nullopt;
}

std::optional<uint64_t> parse_u64(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// A mount type is a chain of mount-manager transformers ("format/", "mkdir/") over a base type.
struct MountType {
  bool format = false;
  bool mkdir = false;
  std::string base;
};

MountType split_type(const std::string& type) {
  MountType out;
  std::string_view rest = type;
  for (;;) {
    if (starts_with(rest, "format/")) {
      out.format = true;
      rest.remove_prefix(7);
    } else if (starts_with(rest, "mkdir/")) {
      out.mkdir = true;
      rest.remove_prefix(6);
    } else {
      break;
    }
  }
  out.base = std::string(rest);
  return out;
}

std::string describe(const std::vector<ContainerdMount>& mounts, size_t index) {
  return fmt::format("mount {} (type '{}')", index, mounts[index].type);
}

using contract::MountTemplate;
using contract::TemplatePiece;

// "mount 3 (type 'overlay') option 'uidmap=...'": what template errors name.
std::string describe_option(const std::vector<ContainerdMount>& mounts, size_t index,
                            std::string_view option) {
  return fmt::format("{} option '{}'", describe(mounts, index), option);
}

std::vector<TemplatePiece> split_templates(std::string_view text, size_t mount_count,
                                           const std::string& context) {
  return contract::parse_templates(text, mount_count, context);
}

// The guest parses what the plan hands it with the same contract functions: check here, so a
// list the guest would refuse fails in the hook, naming the mount and the option.
template <typename Parse>
void check_guest_spec(Parse parse, const std::string& guest_text, const HookPlan& plan,
                      const std::vector<ContainerdMount>& mounts, size_t index,
                      std::string_view option) {
  try {
    (void)parse(guest_text, plan.lowers.size() + 1);  // the guest's mounts: upper + lowers
  } catch (const Error& error) {
    throw_with_context(error, describe_option(mounts, index, option));
  }
}

std::string mount_template(size_t n) { return fmt::format("{{{{ mount {} }}}}", n); }

// Renumbers one option for the guest, naming the mount and the option in errors.
std::string renumber(const std::string& text, const TemplateMap& map,
                     const std::vector<ContainerdMount>& mounts, size_t index,
                     std::string_view option) {
  return renumber_templates(text, map, describe_option(mounts, index, option));
}

PlannedLower plan_lower(const std::vector<ContainerdMount>& mounts, size_t index) {
  const auto& mount = mounts[index];
  PlannedLower lower;
  lower.mount_index = index;
  lower.image = mount.source;
  if (lower.image.empty() || lower.image.front() != '/') {
    throw Error("{}: source '{}' must be an absolute path to an EROFS image",
                describe(mounts, index), mount.source);
  }
  for (const auto& option : mount.options) {
    if (option == "ro" || option == "loop") continue;
    if (option == "rw") {
      throw Error("{}: option 'rw': an EROFS layer is read-only", describe(mounts, index));
    }
    if (auto device = value_after(option, "device")) {
      if (device->empty() || device->front() != '/') {
        throw Error("{}: option '{}' must name an absolute path", describe(mounts, index), option);
      }
      lower.devices.push_back(*device);
    } else if (auto sidecar = value_after(option, marker::kContainerdDmverity)) {
      if (sidecar->empty()) {
        throw Error("{}: empty {}=", describe(mounts, index), marker::kContainerdDmverity);
      }
      lower.dmverity_sidecar = *sidecar;
    } else if (starts_with(option, marker::kContainerdPrefix)) {
      throw Error("{}: unsupported option '{}'", describe(mounts, index), option);
    } else {
      lower.mount_options.push_back(option);
    }
  }
  return lower;
}

PlannedUpper plan_upper(const std::vector<ContainerdMount>& mounts, size_t index, bool mkfs) {
  const auto& mount = mounts[index];
  PlannedUpper upper;
  upper.mount_index = index;
  upper.image = mount.source;
  if (upper.image.empty() || upper.image.front() != '/') {
    throw Error("{}: source '{}' must be an absolute path to an ext4 image",
                describe(mounts, index), mount.source);
  }
  for (const auto& option : mount.options) {
    if (option == "loop") continue;
    if (option == "rw" || option == "ro") {
      // 'ro': block mode's read-only view without parents (checked against the final mount).
      upper.read_only = option == "ro";
      continue;
    }
    if (auto fs_type = value_after(option, marker::kContainerdMkfsFs)) {
      if (*fs_type != "ext4") {
        throw Error("{}: {}={} is not supported (only ext4)", describe(mounts, index),
                    marker::kContainerdMkfsFs, *fs_type);
      }
    } else if (auto size = value_after(option, marker::kContainerdMkfsSize)) {
      auto bytes = parse_u64(*size);
      if (!bytes || *bytes == 0) {
        throw Error("{}: {}='{}' is not a positive byte count", describe(mounts, index),
                    marker::kContainerdMkfsSize, *size);
      }
      upper.mkfs_size = *bytes;
    } else {
      throw Error("{}: unsupported option '{}' on the ext4 upper", describe(mounts, index), option);
    }
  }
  if (mkfs && !upper.mkfs_size) {
    throw Error("{}: missing {}=", describe(mounts, index), marker::kContainerdMkfsSize);
  }
  return upper;
}

// Fills the guest numbering once lowers are in guest order.
TemplateMap make_map(const std::vector<ContainerdMount>& mounts, const HookPlan& plan) {
  TemplateMap map;
  map.guest_index_of.assign(mounts.size(), std::nullopt);
  if (plan.upper) map.guest_index_of[plan.upper->mount_index] = 0;
  for (size_t i = 0; i < plan.lowers.size(); ++i) {
    map.guest_index_of[plan.lowers[i].mount_index] = i + 1;
  }
  return map;
}

std::string guest_lowerdir_for(size_t count) {
  if (count == 1) return mount_template(1);
  return fmt::format("{{{{ overlay 1 {} }}}}", count);
}

}  // namespace

std::vector<ContainerdMount> parse_mount_list(const json& input) {
  const json* list = &input;
  if (input.is_object()) {
    auto a = input.find("mounts");
    auto b = input.find("Mounts");
    if (a != input.end()) {
      list = &*a;
    } else if (b != input.end()) {
      list = &*b;
    } else {
      throw Error("mount list: expected a JSON array of mounts or an object with 'mounts'");
    }
  }
  if (!list->is_array()) throw Error("mount list: expected a JSON array of mounts");
  if (list->empty()) throw Error("mount list is empty");
  std::vector<ContainerdMount> mounts;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& item = (*list)[i];
    if (!item.is_object()) throw Error("mount {}: expected a JSON object", i);
    ContainerdMount mount;
    mount.type = string_field(item, "type", "Type", i);
    mount.source = string_field(item, "source", "Source", i);
    mount.target = string_field(item, "target", "Target", i);
    if (mount.type.empty()) throw Error("mount {}: missing 'type'", i);
    if (const json* options = field(item, "options", "Options", i);
        options != nullptr && !options->is_null()) {
      if (!options->is_array()) throw Error("mount {}: 'options' must be an array of strings", i);
      for (const auto& option : *options) {
        if (!option.is_string()) throw Error("mount {}: 'options' must be an array of strings", i);
        mount.options.push_back(option.get<std::string>());
      }
    }
    mounts.push_back(std::move(mount));
  }
  return mounts;
}

std::vector<ContainerdMount> parse_mount_list_text(std::string_view text,
                                                   const std::string& origin) {
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& error) {
    throw Error("{}: not valid JSON: {}", origin, error.what());
  }
  try {
    return parse_mount_list(parsed);
  } catch (const Error& error) {
    throw_with_context(error, origin);
  }
}

std::string renumber_templates(const std::string& text, const TemplateMap& map,
                               const std::string& context) {
  auto guest = [&](size_t n) -> size_t {
    if (n >= map.guest_index_of.size() || !map.guest_index_of[n]) {
      throw Error("{}: template refers to mount {}, which the guest cannot see", context, n);
    }
    return *map.guest_index_of[n];
  };
  std::string out;
  // Indices are bounded by the list (parse_templates), so walking a range is cheap.
  for (const auto& piece : split_templates(text, map.guest_index_of.size(), context)) {
    if (!piece.templ) {
      out += piece.literal;
    } else if (!piece.templ->overlay) {
      out += mount_template(guest(piece.templ->first));
    } else {
      const MountTemplate& host = *piece.templ;
      MountTemplate guest_range{true, guest(host.first), guest(host.last)};
      // The guest range must cover the same mounts in the same order.
      bool same = guest_range.count() == host.count();
      for (size_t i = 0; same && i < host.count(); ++i) {
        same = guest(host.at(i)) == guest_range.at(i);
      }
      if (!same) {
        throw Error("{}: {} does not map onto a guest mount range", context, host.render());
      }
      out += guest_range.render();
    }
  }
  return out;
}

namespace {

// Mounts before the last one are what the final mount is built from: erofs lowers (returned,
// in list order) and at most one ext4 upper (into plan.upper).
std::vector<size_t> plan_earlier_mounts(const std::vector<ContainerdMount>& mounts,
                                        HookPlan& plan) {
  std::vector<size_t> erofs_indices;
  for (size_t i = 0; i + 1 < mounts.size(); ++i) {
    const auto type = split_type(mounts[i].type);
    if (type.format || type.mkdir) {
      throw Error("{}: only the last mount may be a format/ or mkdir/ mount", describe(mounts, i));
    }
    if (type.base == "erofs") {
      erofs_indices.push_back(i);
    } else if (type.base == "mkfs/ext4" || type.base == "ext4") {
      if (plan.upper) {
        throw Error("{}: a second writable upper (the first is mount {})", describe(mounts, i),
                    plan.upper->mount_index);
      }
      plan.upper = plan_upper(mounts, i, type.base == "mkfs/ext4");
    } else {
      throw Error(
          "{}: unsupported mount type before the final mount (expected erofs, mkfs/ext4 "
          "or ext4)",
          describe(mounts, i));
    }
  }
  return erofs_indices;
}

void plan_host_overlay(const std::vector<ContainerdMount>& mounts, HookPlan& plan);

// Single mount: a committed layer or view (erofs), a directory-mode bind of fs/, or containerd
// 2.1's overlay of the layers it mounted on the host.
void plan_only_mount(const std::vector<ContainerdMount>& mounts, HookPlan& plan) {
  const ContainerdMount& mount = mounts[0];
  const MountType type = split_type(mount.type);
  if (type.base == "erofs" && !type.format && !type.mkdir) {
    plan.lowers.push_back(plan_lower(mounts, 0));
    plan.rootfs = RootfsKind::Bind;
    plan.bind_source = mount_template(1);
    plan.read_only = true;
    plan.upper_kind = UpperKind::None;
    return;
  }
  if (type.base == "overlay" && !type.format && !type.mkdir) {
    plan_host_overlay(mounts, plan);
    return;
  }
  if (type.base != "bind" || type.format) {
    throw Error(
        "{}: unsupported as the only mount (expected erofs, bind, or containerd 2.1's overlay "
        "of host lowerdirs)",
        describe(mounts, 0));
  }
  if (mount.source.empty() || mount.source.front() != '/') {
    throw Error("{}: source '{}' must be an absolute host directory", describe(mounts, 0),
                mount.source);
  }
  plan.rootfs = RootfsKind::HostShare;
  plan.host_share_source = mount.source;
  for (const auto& option : mount.options) {
    if (option == "ro") {
      plan.read_only = true;
    } else if (option == "rw") {
      plan.read_only = false;
    } else if (auto spec = value_after(option, marker::kContainerdMkdirPath)) {
      throw Error("{}: mkdir directive '{}' on a host directory", describe(mounts, 0), option);
    } else if (starts_with(option, marker::kContainerdPrefix)) {
      throw Error("{}: unsupported option '{}'", describe(mounts, 0), option);
    } else if (option.find("{{") != std::string::npos) {
      // Nothing in the guest resolves a template against a shared host directory.
      throw Error("{}: template in option '{}' of a host directory bind",
                  describe_option(mounts, 0, option), option);
    } else {
      plan.bind_options.push_back(option);
    }
  }
  plan.upper_kind = UpperKind::None;  // writes go to the shared host directory itself
}

// The final overlay's own options; the rest pass through to the guest's overlay.
struct OverlayOptions {
  std::optional<std::string> lowerdir, upperdir, workdir;
  std::vector<std::string> mkdir_raw;  // X-containerd.mkdir.path values, host numbering
};

OverlayOptions split_overlay_options(const std::vector<ContainerdMount>& mounts, size_t index,
                                     HookPlan& plan) {
  OverlayOptions out;
  for (const auto& option : mounts[index].options) {
    if (auto value = value_after(option, "lowerdir")) {
      out.lowerdir = *value;
    } else if (auto value = value_after(option, "upperdir")) {
      out.upperdir = *value;
    } else if (auto value = value_after(option, "workdir")) {
      out.workdir = *value;
    } else if (auto spec = value_after(option, marker::kContainerdMkdirPath)) {
      out.mkdir_raw.push_back(*spec);
    } else if (starts_with(option, marker::kContainerdPrefix)) {
      throw Error("{}: unsupported option '{}'", describe(mounts, index), option);
    } else {
      plan.overlay_options.push_back(option);
    }
  }
  return out;
}

// lowerdir order is the guest's lower order: its first entry is the top layer. Every entry is
// a template of earlier erofs mounts, and every erofs mount appears exactly once.
void plan_lowerdir(const std::vector<ContainerdMount>& mounts, size_t final_index,
                   const std::string& lowerdir, const std::vector<size_t>& erofs_indices,
                   HookPlan& plan) {
  std::set<size_t> seen;
  size_t start = 0;
  while (start <= lowerdir.size()) {
    size_t colon = lowerdir.find(':', start);
    std::string element =
        lowerdir.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    auto pieces = split_templates(element, mounts.size(),
                                  describe_option(mounts, final_index, "lowerdir=" + lowerdir));
    if (pieces.size() != 1 || !pieces[0].templ) {
      throw Error(
          "{}: lowerdir entry '{}' is not a {{{{ mount N }}}} or {{{{ overlay A B }}}} "
          "template of an earlier erofs mount (host paths are not visible in the VM; only "
          "containerd 2.1's single overlay of its own host EROFS mounts is mapped back to the "
          "layer files, and containerd 2.2+ hands the VM the layer files as erofs mounts)",
          describe(mounts, final_index), element);
    }
    const MountTemplate& range = *pieces[0].templ;
    for (size_t k = 0; k < range.count(); ++k) {
      const size_t index = range.at(k);
      if (index >= final_index || split_type(mounts[index].type).base != "erofs") {
        throw Error("{}: lowerdir entry '{}' refers to mount {}, which is not an erofs mount",
                    describe(mounts, final_index), element, index);
      }
      if (!seen.insert(index).second) {
        throw Error("{}: lowerdir names mount {} twice", describe(mounts, final_index), index);
      }
      plan.lowers.push_back(plan_lower(mounts, index));
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  for (size_t index : erofs_indices) {
    if (!seen.count(index)) {
      throw Error("{}: not used in the overlay's lowerdir", describe(mounts, index));
    }
  }
}

// Where the overlay writes: the ext4 upper disk, a memory-backed upper in the guest (directory
// mode), or nowhere (read-only).
void plan_overlay_upper(const std::vector<ContainerdMount>& mounts, size_t final_index,
                        const OverlayOptions& options, HookPlan& plan) {
  const auto& upperdir = options.upperdir;
  const auto& workdir = options.workdir;
  if (plan.upper && plan.upper->read_only) {
    throw Error(
        "{}: option 'ro': a read-only upper can only be bound read-only (containerd's view "
        "without parents: format/mkdir/bind of {}/upper with ro), not be an overlay's upperdir",
        describe(mounts, plan.upper->mount_index), mount_template(plan.upper->mount_index));
  }
  if (plan.upper) {
    const std::string expected_upper = mount_template(plan.upper->mount_index) + "/upper";
    const std::string expected_work = mount_template(plan.upper->mount_index) + "/work";
    if (upperdir != expected_upper || workdir != expected_work) {
      throw Error(
          "{}: with an ext4 upper the guest layout needs upperdir={} and workdir={} "
          "(got upperdir={} workdir={})",
          describe(mounts, final_index), expected_upper, expected_work, upperdir.value_or("<none>"),
          workdir.value_or("<none>"));
    }
    plan.upper_kind = UpperKind::Ext4Disk;
    plan.guest_upperdir = mount_template(0) + "/upper";
    plan.guest_workdir = mount_template(0) + "/work";
  } else if (upperdir || workdir) {
    if (!upperdir || !workdir) {
      throw Error("{}: upperdir= and workdir= must come together", describe(mounts, final_index));
    }
    if (upperdir->find("{{") != std::string::npos || workdir->find("{{") != std::string::npos) {
      throw Error("{}: upperdir/workdir templates need an ext4 upper mount in the list",
                  describe(mounts, final_index));
    }
    // Directory mode: containerd's upper is a host directory the VM cannot reach.
    plan.upper_kind = UpperKind::GuestMemory;
    plan.host_upperdir = *upperdir;
    plan.host_workdir = *workdir;
  } else {
    plan.upper_kind = UpperKind::None;
    plan.read_only = true;
  }
}

// containerd 2.1 (active snapshot or multi-layer view): ONE overlay whose lowerdir lists host
// directories, each the snapshotter's own EROFS mount of <snapshot>/layer.erofs. Each becomes a
// lower whose image the hook finds through the mount table (host_lowerdirs.h); a host upperdir
// becomes the guest's memory-backed upper, as in directory mode; no upperdir, a read-only view.
// No template can appear: nothing earlier in the list is mounted in the guest.
void plan_host_overlay(const std::vector<ContainerdMount>& mounts, HookPlan& plan) {
  OverlayOptions options = split_overlay_options(mounts, 0, plan);
  if (!options.lowerdir || options.lowerdir->empty()) {
    throw Error("{}: no lowerdir= option", describe(mounts, 0));
  }
  if (!options.mkdir_raw.empty()) {
    throw Error("{}: mkdir directive '{}' in an overlay of host directories", describe(mounts, 0),
                options.mkdir_raw.front());
  }
  for (const auto& option : plan.overlay_options) {
    if (option.find("{{") != std::string::npos) {
      throw Error("{}: template in option '{}', but no mount of the list comes before it",
                  describe(mounts, 0), option);
    }
  }
  const std::string context = describe_option(mounts, 0, "lowerdir=" + *options.lowerdir);
  if (options.lowerdir->find("{{") != std::string::npos) {
    throw Error("{}: a template, but no mount of the list comes before it", context);
  }
  for (const auto& directory : split_host_lowerdir(*options.lowerdir, context)) {
    PlannedLower lower;
    lower.mount_index = 0;
    lower.host_directory = directory;
    plan.lowers.push_back(std::move(lower));
  }
  plan.guest_lowerdir = guest_lowerdir_for(plan.lowers.size());
  plan_overlay_upper(mounts, 0, options, plan);
  for (const auto& option : plan.overlay_options) {
    if (option == "ro") plan.read_only = true;
  }
  plan.rootfs = RootfsKind::Overlay;
}

// Final overlay: lowers from lowerdir, the upper, then options and mkdir directives renumbered
// for the guest.
void plan_overlay(const std::vector<ContainerdMount>& mounts,
                  const std::vector<size_t>& erofs_indices, HookPlan& plan) {
  const size_t final_index = mounts.size() - 1;
  OverlayOptions options = split_overlay_options(mounts, final_index, plan);
  if (!options.lowerdir || options.lowerdir->empty()) {
    throw Error("{}: no lowerdir= option", describe(mounts, final_index));
  }
  plan_lowerdir(mounts, final_index, *options.lowerdir, erofs_indices, plan);
  TemplateMap map = make_map(mounts, plan);
  plan.guest_lowerdir = guest_lowerdir_for(plan.lowers.size());
  plan_overlay_upper(mounts, final_index, options, plan);
  for (const auto& option : plan.overlay_options) {
    if (option == "ro") plan.read_only = true;
  }
  for (auto& option : plan.overlay_options) {
    option = renumber(option, map, mounts, final_index, option);
  }
  for (const auto& spec : options.mkdir_raw) {
    if (spec.find("{{") == std::string::npos) {
      throw Error("{}: mkdir directive '{}' names a host path", describe(mounts, final_index),
                  spec);
    }
    const std::string option = contract::make_option(marker::kContainerdMkdirPath, spec);
    plan.mkdir_specs.push_back(renumber(spec, map, mounts, final_index, option));
    check_guest_spec(contract::parse_mkdir_spec, plan.mkdir_specs.back(), plan, mounts, final_index,
                     option);
  }
  plan.rootfs = RootfsKind::Overlay;
}

// Final bind (or rbind) of one earlier mount: the upper (block mode without parents) or the
// only erofs lower (a read-only view).
void plan_bind(const std::vector<ContainerdMount>& mounts, const std::vector<size_t>& erofs_indices,
               HookPlan& plan) {
  const size_t final_index = mounts.size() - 1;
  const ContainerdMount& final_mount = mounts[final_index];
  const std::string& source = final_mount.source;
  auto pieces = split_templates(
      source, mounts.size(), fmt::format("{} source '{}'", describe(mounts, final_index), source));
  if (pieces.empty() || !pieces[0].templ || pieces[0].templ->overlay) {
    throw Error("{}: source '{}' must start with {{{{ mount N }}}} of an earlier mount",
                describe(mounts, final_index), source);
  }
  for (size_t i = 1; i < pieces.size(); ++i) {
    if (pieces[i].templ) {
      throw Error("{}: source '{}' has more than one template", describe(mounts, final_index),
                  source);
    }
  }
  const size_t target = pieces[0].templ->first;
  if (target >= final_index) {
    throw Error("{}: source '{}' refers to mount {}, which does not come before it",
                describe(mounts, final_index), source, target);
  }
  if (plan.upper && target == plan.upper->mount_index) {
    if (!erofs_indices.empty()) {
      throw Error("{}: not used by the final bind of the upper",
                  describe(mounts, erofs_indices[0]));
    }
    plan.upper_kind = UpperKind::Ext4Disk;
    // The read-only view: the disk is attached read-only, so the bind can only be read-only.
    if (plan.upper->read_only) plan.read_only = true;
  } else {
    if (split_type(mounts[target].type).base != "erofs") {
      throw Error("{}: bind source refers to mount {}, which is neither erofs nor the upper",
                  describe(mounts, final_index), target);
    }
    for (size_t index : erofs_indices) {
      if (index != target) throw Error("{}: not used by the final bind", describe(mounts, index));
    }
    if (plan.upper) {
      throw Error("{}: the upper is not used by the final bind",
                  describe(mounts, plan.upper->mount_index));
    }
    plan.lowers.push_back(plan_lower(mounts, target));
    plan.upper_kind = UpperKind::None;
    plan.read_only = true;
  }
  TemplateMap map = make_map(mounts, plan);
  plan.bind_source = renumber(source, map, mounts, final_index, "source=" + source);
  check_guest_spec(contract::parse_bind_spec, plan.bind_source, plan, mounts, final_index,
                   "source=" + source);
  for (const auto& option : final_mount.options) {
    if (option == "ro") {
      plan.read_only = true;
    } else if (option == "rw") {
      if (plan.upper_kind != UpperKind::Ext4Disk) {
        throw Error("{}: option 'rw' on a bind of a read-only EROFS layer",
                    describe(mounts, final_index));
      }
      if (plan.upper->read_only) {
        throw Error("{}: option 'rw' on a bind of the read-only upper ({} has 'ro')",
                    describe(mounts, final_index), describe(mounts, plan.upper->mount_index));
      }
    } else if (auto spec = value_after(option, marker::kContainerdMkdirPath)) {
      plan.mkdir_specs.push_back(renumber(*spec, map, mounts, final_index, option));
      check_guest_spec(contract::parse_mkdir_spec, plan.mkdir_specs.back(), plan, mounts,
                       final_index, option);
    } else if (starts_with(option, marker::kContainerdPrefix)) {
      throw Error("{}: unsupported option '{}'", describe(mounts, final_index), option);
    } else {
      plan.bind_options.push_back(renumber(option, map, mounts, final_index, option));
    }
  }
  plan.rootfs = RootfsKind::Bind;
}

}  // namespace

HookPlan plan_mounts(const std::vector<ContainerdMount>& mounts) {
  if (mounts.empty()) throw Error("mount list is empty");
  HookPlan plan;
  const std::vector<size_t> erofs_indices = plan_earlier_mounts(mounts, plan);
  if (mounts.size() == 1) {
    plan_only_mount(mounts, plan);
    return plan;
  }
  const size_t final_index = mounts.size() - 1;
  const std::string base = split_type(mounts[final_index].type).base;
  if (base == "overlay") {
    plan_overlay(mounts, erofs_indices, plan);
  } else if (base == "bind" || base == "rbind") {
    plan_bind(mounts, erofs_indices, plan);
  } else {
    throw Error("{}: unsupported final mount (expected overlay or bind after {} earlier mounts)",
                describe(mounts, final_index), final_index);
  }
  return plan;
}

}  // namespace evmdk::host
