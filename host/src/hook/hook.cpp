#include "evmdk/host/hook/hook.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "evmdk/atomic_file.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/contract/markers.h"
#include "evmdk/contract/mount_template.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/hook/host_lowerdirs.h"
#include "evmdk/input_file.h"
#include "evmdk/qemu.h"
#include "hook_files.h"
#include "upper_image.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using hook_detail::blkid_type;
using hook_detail::load_hook_state;
using hook_detail::NewExt4Image;
using nlohmann::json;

std::string sha256_hex(const std::string& data) { return to_hex(sha256(data)); }

// Per-container serials: two containers of one image in the same VM must not share one.
std::string serial_for(const std::string& id, const std::string& role) {
  return "evh-" + sha256_hex("erofs-vmdk hook serial v1\n" + id + "\n" + role).substr(0, 16);
}

json mounts_to_json(const std::vector<ContainerdMount>& mounts) {
  json out = json::array();
  for (const auto& m : mounts) {
    out.push_back(
        {{"type", m.type}, {"source", m.source}, {"target", m.target}, {"options", m.options}});
  }
  return out;
}

// --attach pmem changes every lower disk: a retry with another attach is another request.
std::string pmem_digest_suffix(const HookRequest& request) {
  if (request.attach != DiskAttach::Pmem) return "";  // blk: the digest it always had
  return fmt::format("\nattach=pmem dax-fallback={}",
                     contract::dax_fallback_name(request.dax_fallback));
}

std::string describe_mount(const std::vector<ContainerdMount>& mounts, size_t index) {
  return fmt::format("mount {} (type '{}')", index, mounts[index].type);
}

// Removes the hook directory (created by this run) if the run fails before committing.
class DirectoryGuard {
 public:
  explicit DirectoryGuard(std::string dir) : dir_(std::move(dir)) {}
  DirectoryGuard(const DirectoryGuard&) = delete;
  DirectoryGuard& operator=(const DirectoryGuard&) = delete;
  ~DirectoryGuard() {
    if (dir_.empty()) return;
    std::error_code ignored;
    fs::remove_all(dir_, ignored);  // does not follow symlinks; holds only what this run made
  }
  void release() { dir_.clear(); }

 private:
  std::string dir_;
};

struct LowerGroup {
  std::string name;                   // subdirectory and role: "lowers" or "flat-<k>"
  std::string role;                   // "lowers" or "flat"
  std::vector<size_t> guest_indices;  // guest lower index of each storage the group yields
  ComposeOptions options;
};

std::vector<std::string> without_key(const std::vector<std::string>& options,
                                     std::string_view key) {
  std::vector<std::string> out;
  for (const auto& option : options) {
    std::string_view view = option;
    if (view.substr(0, key.size()) == key &&
        (view.size() == key.size() || view[key.size()] == '=')) {
      continue;
    }
    out.push_back(option);
  }
  return out;
}

json disk_json(const std::string& role, const std::string& path, const std::string& format,
               bool read_only, const std::string& serial, bool created, json qemu) {
  return json{{"role", role},           {"path", path},     {"format", format},
              {"read_only", read_only}, {"serial", serial}, {"created", created},
              {"qemu", std::move(qemu)}};
}

json upper_qemu(const std::string& path, const std::string& serial, bool read_only) {
  json blockdev{{"driver", "raw"},
                {"node-name", serial},
                {"read-only", read_only},
                {"file", {{"driver", "file"}, {"filename", path}, {"read-only", read_only}}}};
  std::string device = fmt::format("virtio-blk-pci,drive={},serial={}", serial, serial);
  std::string drive = fmt::format("file={},format=raw,if=none,id={}{}", qemu_escape(path), serial,
                                  read_only ? ",readonly=on" : "");
  return json{{"disk", path},
              {"format", "raw"},
              {"serial", serial},
              {"blockdev-add", blockdev},
              {"device_add", {{"driver", "virtio-blk-pci"}, {"drive", serial}, {"serial", serial}}},
              {"blockdev_args", {"-blockdev", blockdev.dump(), "-device", device}},
              {"drive_args", {"-drive", drive, "-device", device}},
              {"drive", drive}};
}

// Names the disk's virtio-blk device after its serial (device_add "id", -device id=): without
// an id QEMU makes the device anonymous, and a runtime could not device_del what it added.
// The serial is per container and disk, so the id is deterministic and unique in the VM.
json with_device_id(json qemu, const std::string& serial) {
  qemu["device_add"]["id"] = serial;
  for (const char* args : {"blockdev_args", "drive_args"}) {
    for (auto& arg : qemu[args]) {
      auto text = arg.get<std::string>();
      if (text.rfind("virtio-blk-pci,", 0) == 0) arg = text + ",id=" + serial;
    }
  }
  return qemu;
}

json rootfs_json(const HookPlan& plan) {
  json rootfs{{"read_only", plan.read_only}};
  switch (plan.upper_kind) {
    case UpperKind::Ext4Disk: rootfs["upper"] = "ext4-disk"; break;
    case UpperKind::GuestMemory: rootfs["upper"] = "guest-memory"; break;
    case UpperKind::None: rootfs["upper"] = "none"; break;
  }
  switch (plan.rootfs) {
    case RootfsKind::Overlay:
      rootfs["type"] = "overlay";
      rootfs["lowerdir"] = plan.guest_lowerdir;
      if (!plan.guest_upperdir.empty()) {
        rootfs["upperdir"] = plan.guest_upperdir;
        rootfs["workdir"] = plan.guest_workdir;
      }
      rootfs["options"] = plan.overlay_options;
      break;
    case RootfsKind::Bind:
      rootfs["type"] = "bind";
      rootfs["source"] = plan.bind_source;
      rootfs["options"] = plan.bind_options;
      break;
    case RootfsKind::HostShare:
      rootfs["type"] = "host-share";
      rootfs["source"] = plan.host_share_source;
      rootfs["options"] = plan.bind_options;
      break;
  }
  rootfs["mkdir"] = plan.mkdir_specs;
  return rootfs;
}

// Markers that describe the rootfs as a whole (mkdir directives, overlay options, bind).
std::vector<std::string> rootfs_markers(const HookPlan& plan) {
  std::vector<std::string> out;
  for (const auto& spec : plan.mkdir_specs) {
    out.push_back(contract::make_option(marker::kContainerdMkdirPath, spec));
  }
  if (plan.rootfs == RootfsKind::Overlay) {
    for (const auto& option : plan.overlay_options) {
      out.push_back(contract::make_option(marker::kOverlayOption, option));
    }
  } else if (plan.rootfs == RootfsKind::Bind) {
    out.push_back(contract::make_option(marker::kRootfsBind, plan.bind_source));
  }
  if (plan.read_only) out.push_back(contract::make_option(marker::kRootfsReadonly, "true"));
  return out;
}

nlohmann::json load_json(const std::string& path) {
  std::string text = read_input_file(path, "hook output", 64u << 20, /*follow_symlinks=*/false);
  try {
    return json::parse(text);
  } catch (const json::exception& error) {
    throw Error("{}: not valid JSON: {}", path, error.what());
  }
}

// Creates the state directory (and missing parents); returns the directories it created,
// deepest first, so a failed run can remove them again.
std::vector<std::string> make_state_dir(const std::string& state_dir) {
  std::vector<std::string> created;
  for (fs::path path = state_dir; !path.empty() && !fs::exists(fs::symlink_status(path));
       path = path.parent_path()) {
    created.push_back(path.string());
    if (path == path.parent_path()) break;
  }
  std::error_code error;
  fs::create_directories(state_dir, error);
  if (error) throw Error("cannot create state directory {}: {}", state_dir, error.message());
  struct stat st {};
  if (::stat(state_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error("state directory {} is not a directory", state_dir);
  }
  return created;
}

// Removes, on failure, the state directories a run created (only while they are empty).
class CreatedDirs {
 public:
  explicit CreatedDirs(std::vector<std::string> dirs) : dirs_(std::move(dirs)) {}
  CreatedDirs(const CreatedDirs&) = delete;
  CreatedDirs& operator=(const CreatedDirs&) = delete;
  ~CreatedDirs() {
    for (const auto& dir : dirs_) ::rmdir(dir.c_str());
  }
  void release() { dirs_.clear(); }

 private:
  std::vector<std::string> dirs_;
};

// One hook run, phase by phase. Everything is validated (layers, sidecars, the planned disks,
// the upper) before the first file is written; then the disks, the upper and the documents
// are made, and the state file records every file for `hook cleanup`.
class HookRun {
 public:
  explicit HookRun(const HookRequest& request) : request_(request) {
    contract::validate_container_id(request.id);
    if (request.state_dir.empty()) throw Error("--state-dir is empty");
    state_dir_ = fs::absolute(request.state_dir).lexically_normal().string();
    dir_ = (fs::path(state_dir_) / request.id).string();
    plan_ = plan_mounts(request.mounts);
    input_digest_ = sha256_hex(mounts_to_json(request.mounts).dump() +
                               "\nverity=" + std::string(to_string(request.verity)) +
                               pmem_digest_suffix(request));
    if (request.attach == DiskAttach::Pmem) {
      if (request.verity == VerityPolicy::kOn) {
        throw Error("--attach pmem with --verity on: {}", kDaxVerityConflict);
      }
      if (request.verity == VerityPolicy::kAuto) {
        format_notes_.push_back(
            fmt::format("--attach pmem: layers are used without dm-verity, sidecars or not ({})",
                        kDaxVerityConflict));
      }
    }
  }

  json run() {
    if (auto stored = stored_output()) return *stored;
    map_host_lowerdirs();
    check_lowers();
    group_lowers();
    check_groups();
    check_upper();
    return write();
  }

 private:
  // A lower's dm-verity, decided before anything is written.
  struct LowerVerity {
    std::optional<VerityLayerInfo> image;
    std::vector<std::optional<VerityLayerInfo>> devices;  // an fsmeta's device= blobs
  };

  // The policy for layers without X-containerd.dmverity: none with --attach pmem (DAX).
  VerityPolicy lower_policy() const {
    return request_.attach == DiskAttach::Pmem ? VerityPolicy::kOff : request_.verity;
  }

  std::string describe(size_t mount_index) const {
    return describe_mount(request_.mounts, mount_index);
  }

  // An existing directory: the same list again returns the stored answer (runtimes retry).
  std::optional<json> stored_output() const {
    struct stat existing {};
    if (::lstat(dir_.c_str(), &existing) != 0) return std::nullopt;
    if (!S_ISDIR(existing.st_mode)) throw Error("{} exists and is not a directory", dir_);
    const std::string state_path = (fs::path(dir_) / kHookStateName).string();
    const std::string output_path = (fs::path(dir_) / kHookOutputName).string();
    if (::access(output_path.c_str(), F_OK) == 0 && ::access(state_path.c_str(), F_OK) == 0) {
      HookState state = load_hook_state(state_path);
      if (state.input_sha256 == input_digest_) return load_json(output_path);
      throw Error(
          "container {} already has hook state in {} for a different mount list; run "
          "`erofs-vmdk hook cleanup` first",
          request_.id, dir_);
    }
    throw Error(
        "{} exists but holds no finished hook output (an interrupted run?); run "
        "`erofs-vmdk hook cleanup` first",
        dir_);
  }

  // containerd 2.1's host lowerdirs -> their layer files, only where the mount table proves it
  // (host_lowerdirs.h); check_lowers then opens exactly those files.
  void map_host_lowerdirs() {
    std::vector<std::string> directories;
    for (const auto& lower : plan_.lowers) {
      if (!lower.host_directory.empty()) directories.push_back(lower.host_directory);
    }
    if (directories.empty()) return;
    std::vector<HostLowerLayer> layers;
    try {
      layers = resolve_host_lowerdirs(directories);
    } catch (const std::exception& error) {
      throw_with_context(error, describe(plan_.lowers.front().mount_index));
    }
    size_t k = 0;
    for (auto& lower : plan_.lowers) {
      if (lower.host_directory.empty()) continue;
      lower.image = layers[k].layer_path;
      host_layers_.emplace(lower.image, layers[k++]);
    }
  }

  // Each image probed here, so a bad one is named by its own mount, and each layer's dm-verity:
  // X-containerd.dmverity names its sidecar and makes it required; otherwise the policy decides.
  // An fsmeta's device blobs (containerd's layer.erofs files, each with its own sidecar) get
  // theirs under the policy; compose puts their trees on the flat disk.
  void check_lowers() {
    verity_.resize(plan_.lowers.size());
    for (size_t i = 0; i < plan_.lowers.size(); ++i) {
      const auto& lower = plan_.lowers[i];
      const std::string what = describe(lower.mount_index);
      InputFile image;
      std::vector<InputFile> devices;
      try {
        image = open_input_file(lower.image, "file");
        if (auto mapped = host_layers_.find(lower.image);
            mapped != host_layers_.end() &&
            (static_cast<uint64_t>(image.st.st_dev) != mapped->second.device ||
             static_cast<uint64_t>(image.st.st_ino) != mapped->second.inode)) {
          throw Error("{} is no longer the file mounted on {}", lower.image,
                      mapped->second.directory);
        }
        (void)probe_layer(image, lower.image);
        for (const auto& device : lower.devices) {
          // Never blocks on a FIFO; only a regular file can be a device= blob.
          devices.push_back(open_input_file(device, "device= blob"));
        }
      } catch (const std::exception& error) {
        throw_with_context(error, what);
      }
      try {
        VerityPolicy policy = lower_policy();
        if (lower.dmverity_sidecar && request_.attach == DiskAttach::Pmem) {
          throw Error("{} with --attach pmem: {}", marker::kContainerdDmverity, kDaxVerityConflict);
        }
        if (lower.dmverity_sidecar && request_.verity != VerityPolicy::kOff) {
          if (*lower.dmverity_sidecar != verity_sidecar_path(lower.image)) {
            throw Error("{}={} must be the layer's own sidecar {}", marker::kContainerdDmverity,
                        *lower.dmverity_sidecar, verity_sidecar_path(lower.image));
          }
          policy = VerityPolicy::kOn;
        }
        verity_[i].image =
            verity_layer_under_policy(image, lower.image, policy, "layer " + lower.image);
      } catch (const std::exception& error) {
        throw_with_context(error, what);
      }
      for (size_t d = 0; d < lower.devices.size(); ++d) {
        try {
          verity_[i].devices.push_back(verity_layer_under_policy(
              devices[d], lower.devices[d], lower_policy(), "layer " + lower.devices[d]));
        } catch (const std::exception& error) {
          throw_with_context(error, fmt::format("{}: device={}", what, lower.devices[d]));
        }
      }
    }
  }

  // Plain layers share one disk (raw for one, gpt for several); each fsmeta group is its own
  // flat disk. Guest lower order is kept through X-erofs-vmdk.layer-index, not disk order.
  void group_lowers() {
    LowerGroup plain;
    plain.name = "lowers";
    plain.role = "lowers";
    size_t flat_count = 0;
    for (size_t i = 0; i < plan_.lowers.size(); ++i) {
      const auto& lower = plan_.lowers[i];
      if (lower.is_fsmeta()) {
        LowerGroup flat;
        flat.name = fmt::format("flat-{}", flat_count++);
        flat.role = "flat";
        flat.guest_indices.push_back(i);
        flat.options.mode = ComposeMode::Flat;
        flat.options.layers.push_back({lower.image, verity_[i].image, lower.mount_options});
        for (size_t d = 0; d < lower.devices.size(); ++d) {
          flat.options.layers.push_back({lower.devices[d], verity_[i].devices[d], {}});
        }
        groups_.push_back(std::move(flat));
      } else {
        plain.guest_indices.push_back(i);
        plain.options.layers.push_back({lower.image, verity_[i].image, lower.mount_options});
      }
    }
    if (!plain.options.layers.empty()) {
      plain.options.mode = plain.options.layers.size() == 1 ? ComposeMode::Raw : ComposeMode::Gpt;
      groups_.insert(groups_.begin(), std::move(plain));
    }
    for (auto& group : groups_) {
      group.options.order = LayerOrder::TopFirst;
      group.options.output_dir = (fs::path(dir_) / group.name).string();
      group.options.serial = serial_for(request_.id, group.name);
      group.options.format = request_.disk_format;
      group.options.allow_copy = request_.allow_copy;
      group.options.pmem.attach = request_.attach;
      group.options.pmem.dax_fallback = request_.dax_fallback;
    }
  }

  // Every disk planned (plan_compose writes nothing), errors naming the group's mounts.
  void check_groups() const {
    for (const auto& group : groups_) {
      try {
        (void)plan_compose(group.options);
      } catch (const std::exception& error) {
        std::string which;
        std::set<size_t> named;  // containerd 2.1's lowers all come from its one mount
        for (size_t index : group.guest_indices) {
          if (!named.insert(plan_.lowers[index].mount_index).second) continue;
          which += (which.empty() ? "" : ", ") + describe(plan_.lowers[index].mount_index);
        }
        throw_with_context(error, which);
      }
    }
  }

  // The upper image: an existing one must hold ext4; a missing one is made (mkfs) in write().
  void check_upper() {
    if (!plan_.upper) return;
    struct stat st {};
    const std::string what = describe(plan_.upper->mount_index);
    upper_image_ = plan_.upper->image;
    if (::lstat(plan_.upper->image.c_str(), &st) == 0) {
      InputFile image = open_input_file(plan_.upper->image, what + ": upper image");
      upper_image_ = image.resolved_path;
      std::string type = blkid_type(upper_image_);
      if (type != "ext4") {
        throw Error("{}: {} exists but holds {}, not ext4", what, plan_.upper->image,
                    type.empty() ? std::string("no filesystem") : type);
      }
    } else if (errno == ENOENT && plan_.upper->mkfs_size) {
      create_upper_ = true;
      struct stat parent {};
      std::string parent_dir = fs::path(plan_.upper->image).parent_path().string();
      if (::stat(parent_dir.c_str(), &parent) != 0 || !S_ISDIR(parent.st_mode)) {
        throw Error("{}: directory {} for the upper image does not exist", what, parent_dir);
      }
    } else {
      throw_errno("{}: cannot use the upper image {}", what, plan_.upper->image);
    }
  }

  // The lower disks, one per group, and their Storage objects in guest lower order.
  void compose_groups() {
    for (const auto& group : groups_) {
      ComposeResult composed = compose(group.options);
      if (!composed.format_note.empty()) {
        format_notes_.push_back(group.name + ": " + composed.format_note);
      }
      disks_.push_back(disk_json(group.role, composed.disk_path, composed.disk_format, true,
                                 composed.serial, false,
                                 with_device_id(composed.qemu, composed.serial)));
      if (group.options.pmem.enabled()) disks_.back()["attach"] = to_string(request_.attach);
      if (composed.storages.size() != group.guest_indices.size()) {
        throw Error("compose of {} returned {} storages for {} lowers", group.name,
                    composed.storages.size(), group.guest_indices.size());
      }
      for (size_t k = 0; k < composed.storages.size(); ++k) {
        Storage storage = composed.storages[k];
        const size_t guest_index = group.guest_indices[k];
        storage.options = without_key(storage.options, marker::kLayerIndex);
        storage.options = without_key(storage.options, marker::kMultiLayer);
        storage.options.insert(storage.options.begin(), std::string(marker::kMultiLayer) + "=true");
        storage.options.push_back(fmt::format("{}={}", marker::kLayerIndex, guest_index));
        storage.mount_point = fmt::format("lower-{}", guest_index);
        lower_storages_.emplace_back(guest_index, std::move(storage));
      }
    }
    std::sort(lower_storages_.begin(), lower_storages_.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }

  // The upper disk (made now when it is missing) and its Storage.
  void add_upper() {
    if (!plan_.upper) return;
    const bool read_only = plan_.upper->read_only;
    if (create_upper_) {
      // A read-only view's new image gets the directories its mkdir directives name on the
      // upper now: the guest sees it through a read-only disk and cannot make them.
      std::vector<contract::MkdirSpec> directories;
      if (read_only) {
        for (const auto& spec : plan_.mkdir_specs) {
          auto parsed = contract::parse_mkdir_spec(spec, plan_.lowers.size() + 1);
          if (parsed.mount_index == 0) directories.push_back(std::move(parsed));
        }
      }
      new_upper_ =
          std::make_unique<NewExt4Image>(plan_.upper->image, *plan_.upper->mkfs_size, directories);
    }
    const std::string serial = serial_for(request_.id, "upper");
    disks_.push_back(
        disk_json("upper", upper_image_, "raw", read_only, serial, create_upper_,
                  with_device_id(upper_qemu(upper_image_, serial, read_only), serial)));
    Storage upper;
    upper.driver = "blk";
    upper.source = "serial:" + serial;
    upper.fstype = "ext4";
    upper.options = {std::string(marker::kMultiLayer) + "=true",
                     std::string(marker::kOverlayUpper)};
    if (read_only) upper.options.insert(upper.options.begin(), "ro");
    upper.mount_point = "upper";
    storages_.push_back(std::move(upper));
  }

  // A directory snapshot with no parents: the VM reaches it through a shared directory.
  void add_share() {
    if (plan_.rootfs != RootfsKind::HostShare) return;
    const std::string tag = serial_for(request_.id, "share");
    shares_.push_back(
        {{"tag", tag}, {"source", plan_.host_share_source}, {"read_only", plan_.read_only}});
    Storage share;
    share.driver = "virtio-fs";
    share.source = tag;
    share.fstype = "virtiofs";
    share.options = {plan_.read_only ? "ro" : "rw"};
    for (const auto& option : plan_.bind_options) share.options.push_back(option);
    share.mount_point = "rootfs";
    storages_.push_back(std::move(share));
  }

  // Lowers mounted without dm-verity, so an operator sees what `auto` left unprotected.
  json unprotected_lowers() const {
    json unprotected = json::array();
    for (size_t i = 0; i < plan_.lowers.size(); ++i) {
      const auto& lower = plan_.lowers[i];
      bool passed_on = std::any_of(lower.mount_options.begin(), lower.mount_options.end(),
                                   [](const std::string& o) { return is_dmverity_option(o); });
      if (!verity_[i].image && !passed_on) unprotected.push_back(lower.image);
      for (size_t d = 0; d < lower.devices.size(); ++d) {
        if (!verity_[i].devices[d]) unprotected.push_back(lower.devices[d]);
      }
    }
    return unprotected;
  }

  json output_document() const {
    json notes = json::array();
    for (const auto& note : format_notes_) notes.push_back(note);
    if (plan_.upper_kind == UpperKind::GuestMemory) {
      notes.push_back(
          fmt::format("directory mode: the host upperdir {} and workdir {} are not "
                      "visible in the VM; the guest uses a memory-backed upper",
                      plan_.host_upperdir, plan_.host_workdir));
    }
    json output{{"id", request_.id},
                {"dir", dir_},
                {"disks", disks_},
                {"storages", to_json(storages_)},
                {"rootfs", rootfs_json(plan_)},
                {"shares", shares_},
                {"notes", notes},
                {"verity",
                 {{"policy", std::string(to_string(request_.verity))},
                  {"unprotected", unprotected_lowers()}}}};
    if (plan_.upper_kind == UpperKind::GuestMemory) {
      output["rootfs"]["host_upperdir"] = plan_.host_upperdir;
      output["rootfs"]["host_workdir"] = plan_.host_workdir;
    }
    return output;
  }

  // Write: the hook directory (exclusively ours), the disks, then the documents.
  json write() {
    CreatedDirs created_state_dirs(make_state_dir(state_dir_));
    if (::mkdir(dir_.c_str(), 0700) != 0) throw_errno("cannot create {}", dir_);
    DirectoryGuard guard(dir_);
    HookState state;
    state.id = request_.id;
    state.status = "building";
    state.input_sha256 = input_digest_;
    for (const auto& group : groups_) state.dirs.push_back(group.name);
    write_file_atomic((fs::path(dir_) / kHookStateName).string(), to_json(state).dump(2) + "\n",
                      0600);

    compose_groups();
    add_upper();
    add_share();
    for (auto& [index, storage] : lower_storages_) storages_.push_back(std::move(storage));
    // Rootfs-wide markers go once, on the first storage (the upper when there is one).
    if (!storages_.empty()) {
      for (auto& option : rootfs_markers(plan_)) storages_.front().options.push_back(option);
    }
    json output = output_document();

    // Every file this run made inside dir, for cleanup to remove exactly these.
    state.status = "complete";
    for (const auto& group : groups_) {
      std::vector<std::string> names;
      for (const auto& entry : fs::directory_iterator(fs::path(dir_) / group.name)) {
        names.push_back(group.name + "/" + entry.path().filename().string());
      }
      std::sort(names.begin(), names.end());
      for (auto& name : names) state.files.push_back(name);
    }
    state.files.push_back(kHookStorageName);
    state.files.push_back(kHookOutputName);
    state.files.push_back(kHookStateName);

    OutputTransaction transaction(dir_);
    transaction.add(kHookStorageName, to_json(storages_).dump(2) + "\n");
    transaction.add(kHookOutputName, output.dump(2) + "\n");
    transaction.add(kHookStateName, to_json(state).dump(2) + "\n", 0600);
    if (new_upper_) new_upper_->publish();
    transaction.commit();
    if (new_upper_) new_upper_->keep();
    guard.release();
    created_state_dirs.release();
    return output;
  }

  const HookRequest& request_;
  std::string state_dir_;
  std::vector<std::string> format_notes_;  // --disk-format auto chose vmdk, and why
  std::string dir_;                        // <state-dir>/<id>
  HookPlan plan_;
  std::string input_digest_;         // of the mount list and the verity policy
  std::vector<LowerVerity> verity_;  // per planned lower
  std::vector<LowerGroup> groups_;
  std::map<std::string, HostLowerLayer> host_layers_;  // containerd 2.1: layer file -> its mount
  bool create_upper_ = false;
  std::string upper_image_;  // what QEMU opens read-write: the resolved file, never a symlink
  std::unique_ptr<NewExt4Image> new_upper_;
  json disks_ = json::array();
  std::vector<Storage> storages_;
  std::vector<std::pair<size_t, Storage>> lower_storages_;  // (guest index, storage)
  json shares_ = json::array();
};

}  // namespace

json run_hook(const HookRequest& request) { return HookRun(request).run(); }

}  // namespace evmdk::host
