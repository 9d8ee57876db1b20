#include "evmdk/host/hook/hook.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "evmdk/atomic_file.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/input_file.h"
#include "evmdk/process.h"
#include "evmdk/unique_fd.h"


namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    throw Error("SHA-256 failed");
  }
  std::string out;
  for (unsigned i = 0; i < size; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

// Per-container serials: two containers of one image in the same VM must not share one.
std::string serial_for(const std::string& id, const std::string& role) {
  return "evh-" + sha256_hex("erofs-vmdk hook serial v1\n" + id + "\n" + role).substr(0, 16);
}

json mounts_to_json(const std::vector<ContainerdMount>& mounts) {
  json out = json::array();
  for (const auto& m : mounts) {
    out.push_back({{"type", m.type}, {"source", m.source}, {"target", m.target},
                   {"options", m.options}});
  }
  return out;
}

std::string describe_mount(const std::vector<ContainerdMount>& mounts, size_t index) {
  return fmt::format("mount {} (type '{}')", index, mounts[index].type);
}

// libblkid's view of a file: TYPE, or empty when it finds no filesystem.
std::string blkid_type(const std::string& path) {
  std::unique_ptr<blkid_struct_probe, void (*)(blkid_probe)> probe(
      blkid_new_probe_from_filename(path.c_str()), blkid_free_probe);
  if (!probe) throw Error("{}: libblkid cannot open it", path);
  blkid_probe_enable_superblocks(probe.get(), 1);
  blkid_probe_set_superblocks_flags(probe.get(), BLKID_SUBLKS_TYPE);
  if (blkid_do_safeprobe(probe.get()) != 0) return {};
  const char* type = nullptr;
  if (blkid_probe_lookup_value(probe.get(), "TYPE", &type, nullptr) != 0 || type == nullptr) return {};
  return type;
}

// A freshly made ext4 image at a temp name next to its final path; removed unless published.
class NewExt4Image {
 public:
  NewExt4Image(const std::string& final_path, uint64_t size) : final_path_(final_path) {
    fs::path target(final_path);
    std::string pattern = (target.parent_path() / ("." + target.filename().string() + ".evmdk-XXXXXX")).string();
    UniqueFd fd(::mkstemp(pattern.data()));
    if (!fd) throw_errno("cannot create the upper image next to {}", final_path);
    temp_path_ = pattern;
    if (::fchmod(fd.get(), 0600) != 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      int saved = errno;
      ::unlink(temp_path_.c_str());
      throw_errno_message(saved, fmt::format("cannot size the upper image {} to {} bytes",
                                             final_path, size));
    }
    fd.reset();
    ProcessResult mkfs;
    try {
      mkfs = run_process({"mkfs.ext4", "-q", temp_path_});
    } catch (...) {
      ::unlink(temp_path_.c_str());
      throw;
    }
    if (mkfs.exit_code != 0) {
      ::unlink(temp_path_.c_str());
      throw Error("mkfs.ext4 of the upper {} failed (exit {}): {}", final_path, mkfs.exit_code,
                  mkfs.err.empty() ? mkfs.out : mkfs.err);
    }
  }
  NewExt4Image(const NewExt4Image&) = delete;
  NewExt4Image& operator=(const NewExt4Image&) = delete;
  ~NewExt4Image() {
    if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
    if (published_ && !kept_) ::unlink(final_path_.c_str());
  }
  // Moves it to its final name, never replacing a file that appeared meanwhile.
  void publish() {
    if (::link(temp_path_.c_str(), final_path_.c_str()) != 0) {
      throw_errno("cannot create the upper image {}", final_path_);
    }
    published_ = true;
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
  void keep() { kept_ = true; }

 private:
  std::string final_path_;
  std::string temp_path_;
  bool published_ = false;
  bool kept_ = false;
};

bool is_safe_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
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
  std::string name;        // subdirectory and role: "lowers" or "flat-<k>"
  std::string role;        // "lowers" or "flat"
  std::vector<size_t> guest_indices;  // guest lower index of each storage the group yields
  ComposeOptions options;
};

std::vector<std::string> without_key(const std::vector<std::string>& options, std::string_view key) {
  std::vector<std::string> out;
  for (const auto& option : options) {
    std::string_view view = option;
    if (view.substr(0, key.size()) == key && (view.size() == key.size() || view[key.size()] == '=')) {
      continue;
    }
    out.push_back(option);
  }
  return out;
}

json disk_json(const std::string& role, const std::string& path, const std::string& format,
               bool read_only, const std::string& serial, bool created, json qemu) {
  return json{{"role", role},     {"path", path},     {"format", format},
              {"read_only", read_only}, {"serial", serial}, {"created", created},
              {"qemu", std::move(qemu)}};
}

std::string qemu_escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';  // QEMU option syntax doubles commas
  }
  return out;
}

json upper_qemu(const std::string& path, const std::string& serial) {
  json blockdev{{"driver", "raw"},
                {"node-name", serial},
                {"read-only", false},
                {"file", {{"driver", "file"}, {"filename", path}, {"read-only", false}}}};
  std::string device = fmt::format("virtio-blk-pci,drive={},serial={}", serial, serial);
  std::string drive = fmt::format("file={},format=raw,if=none,id={}", qemu_escape(path), serial);
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
    out.push_back(std::string(marker::kContainerdMkdirPath) + "=" + spec);
  }
  if (plan.rootfs == RootfsKind::Overlay) {
    for (const auto& option : plan.overlay_options) {
      out.push_back("X-erofs-vmdk.overlay-option=" + option);
    }
  } else if (plan.rootfs == RootfsKind::Bind) {
    out.push_back("X-erofs-vmdk.rootfs-bind=" + plan.bind_source);
  }
  if (plan.read_only) out.push_back("X-erofs-vmdk.rootfs-readonly=true");
  return out;
}

// Reads a file the hook wrote in its own directory: never through a symlink, never a FIFO or
// device, never more than `limit` bytes.
std::string read_own_file(const std::string& path, const std::string& what, size_t limit) {
  InputFile file = open_input_file(path, what, InputKind::RegularFile, /*follow_symlinks=*/false);
  const auto size = static_cast<uint64_t>(file.st.st_size);
  if (size > limit) throw Error("{} {}: {} bytes, more than the {} allowed", what, path, size, limit);
  std::string text(size, '\0');
  pread_exact(file.fd.get(), text.data(), text.size(), 0, path);
  return text;
}

nlohmann::json load_json(const std::string& path) {
  std::string text = read_own_file(path, "hook output", 64u << 20);
  try {
    return json::parse(text);
  } catch (const json::exception& error) {
    throw Error("{}: not valid JSON: {}", path, error.what());
  }
}

HookState load_state(const std::string& path) {
  return parse_hook_state(read_own_file(path, "hook state file", kMaxHookStateBytes), path);
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

}  // namespace

HookState parse_hook_state(std::string_view text, const std::string& path) {
  if (text.size() > kMaxHookStateBytes) {
    throw Error("hook state file {}: {} bytes, more than the {} allowed", path, text.size(),
                kMaxHookStateBytes);
  }
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception& error) {
    throw Error("hook state file {}: not valid JSON: {}", path, error.what());
  }
  if (!document.is_object()) throw Error("hook state file {}: expected a JSON object", path);
  auto field = [&](const char* name) -> const json* {
    auto found = document.find(name);
    return found == document.end() || found->is_null() ? nullptr : &*found;
  };
  auto string_field = [&](const char* name, bool required) -> std::string {
    const json* value = field(name);
    if (value == nullptr) {
      if (required) throw Error("hook state file {}: missing string field '{}'", path, name);
      return {};
    }
    if (!value->is_string()) throw Error("hook state file {}: field '{}' must be a string", path, name);
    return value->get<std::string>();
  };
  auto names_field = [&](const char* name) {
    std::vector<std::string> out;
    const json* value = field(name);
    if (value == nullptr) return out;
    if (!value->is_array()) throw Error("hook state file {}: field '{}' must be an array", path, name);
    for (const auto& item : *value) {
      if (!item.is_string()) {
        throw Error("hook state file {}: field '{}' must hold only strings", path, name);
      }
      out.push_back(item.get<std::string>());
    }
    return out;
  };
  HookState state;
  if (const json* version = field("version")) {
    if (!version->is_number_unsigned() || version->get<uint64_t>() != 1) {
      throw Error("hook state file {}: unsupported version {}", path, version->dump());
    }
  }
  state.id = string_field("id", true);
  state.status = string_field("status", true);
  if (state.status != "building" && state.status != "complete") {
    throw Error("hook state file {}: status '{}' is neither 'building' nor 'complete'", path,
                state.status);
  }
  state.input_sha256 = string_field("input_sha256", false);
  state.dirs = names_field("dirs");
  state.files = names_field("files");
  if (field("created_upper") != nullptr) state.created_upper = string_field("created_upper", false);
  return state;
}

nlohmann::json to_json(const HookState& state) {
  json out{{"version", state.version}, {"id", state.id}, {"status", state.status},
           {"input_sha256", state.input_sha256}, {"dirs", state.dirs}};
  if (state.status == "complete") out["files"] = state.files;
  if (state.status == "complete") {
    out["created_upper"] = state.created_upper ? json(*state.created_upper) : json(nullptr);
  }
  return out;
}

json run_hook(const HookRequest& request) {
  contract::validate_container_id(request.id);
  if (request.state_dir.empty()) throw Error("--state-dir is empty");
  const std::string state_dir = fs::absolute(request.state_dir).lexically_normal().string();
  const std::string dir = (fs::path(state_dir) / request.id).string();
  const HookPlan plan = plan_mounts(request.mounts);
  const json input = mounts_to_json(request.mounts);
  const std::string input_digest =
      sha256_hex(input.dump() + "\nverity=" + std::string(to_string(request.verity)));

  // An existing directory: the same list again returns the stored answer (runtimes retry).
  struct stat existing {};
  if (::lstat(dir.c_str(), &existing) == 0) {
    if (!S_ISDIR(existing.st_mode)) throw Error("{} exists and is not a directory", dir);
    const std::string state_path = (fs::path(dir) / kHookStateName).string();
    const std::string output_path = (fs::path(dir) / kHookOutputName).string();
    if (::access(output_path.c_str(), F_OK) == 0 && ::access(state_path.c_str(), F_OK) == 0) {
      HookState state = load_state(state_path);
      if (state.input_sha256 == input_digest) return load_json(output_path);
      throw Error("container {} already has hook state in {} for a different mount list; run "
                  "`erofs-vmdk hook cleanup` first", request.id, dir);
    }
    throw Error("{} exists but holds no finished hook output (an interrupted run?); run "
                "`erofs-vmdk hook cleanup` first", dir);
  }

  // Validate everything before writing anything: sidecars, layers (plan_compose writes
  // nothing), the upper image.
  std::vector<std::vector<std::string>> extra_options(plan.lowers.size());
  std::vector<std::vector<std::vector<std::string>>> device_options(plan.lowers.size());
  for (size_t i = 0; i < plan.lowers.size(); ++i) {
    const auto& lower = plan.lowers[i];
    const std::string what = describe_mount(request.mounts, lower.mount_index);
    // Probe each image here so a bad one is named by its own mount.
    try {
      (void)probe_layer(lower.image);
      for (const auto& device : lower.devices) {
        // Never blocks on a FIFO; only a regular file can be a device= blob.
        (void)open_input_file(device, "device= blob");
      }
    } catch (const std::exception& error) {
      throw Error("{}: {}", what, error.what());
    }
    // The image's own dm-verity options: X-containerd.dmverity names its sidecar and makes it
    // required; otherwise the policy decides. An fsmeta's device blobs (containerd's
    // layer.erofs files, each with its own sidecar) get theirs under the policy; compose puts
    // their trees on the flat disk.
    try {
      if (lower.dmverity_sidecar && request.verity != VerityPolicy::kOff) {
        if (*lower.dmverity_sidecar != verity_sidecar_path(lower.image)) {
          throw Error("X-containerd.dmverity={} must be the layer's own sidecar {}",
                      *lower.dmverity_sidecar, verity_sidecar_path(lower.image));
        }
        extra_options[i] = verity_options_for_layer(lower.image, VerityPolicy::kOn);
      } else {
        extra_options[i] = verity_options_for_layer(lower.image, request.verity);
      }
    } catch (const std::exception& error) {
      throw Error("{}: {}", what, error.what());
    }
    device_options[i].resize(lower.devices.size());
    for (size_t d = 0; d < lower.devices.size(); ++d) {
      try {
        device_options[i][d] = verity_options_for_layer(lower.devices[d], request.verity);
      } catch (const std::exception& error) {
        throw Error("{}: device={}: {}", what, lower.devices[d], error.what());
      }
    }
    for (const auto& option : lower.mount_options) extra_options[i].push_back(option);
  }

  // Plain layers share one disk (raw for one, gpt for several); each fsmeta group is its own
  // flat disk. Guest lower order is kept through X-erofs-vmdk.layer-index, not disk order.
  std::vector<LowerGroup> groups;
  {
    LowerGroup plain;
    plain.name = "lowers";
    plain.role = "lowers";
    size_t flat_count = 0;
    for (size_t i = 0; i < plan.lowers.size(); ++i) {
      const auto& lower = plan.lowers[i];
      if (lower.is_fsmeta()) {
        LowerGroup flat;
        flat.name = fmt::format("flat-{}", flat_count++);
        flat.role = "flat";
        flat.guest_indices.push_back(i);
        flat.options.mode = ComposeMode::Flat;
        flat.options.layers.push_back({lower.image, extra_options[i]});
        for (size_t d = 0; d < lower.devices.size(); ++d) {
          flat.options.layers.push_back({lower.devices[d], device_options[i][d]});
        }
        groups.push_back(std::move(flat));
      } else {
        plain.guest_indices.push_back(i);
        plain.options.layers.push_back({lower.image, extra_options[i]});
      }
    }
    if (!plain.options.layers.empty()) {
      plain.options.mode = plain.options.layers.size() == 1 ? ComposeMode::Raw : ComposeMode::Gpt;
      groups.insert(groups.begin(), std::move(plain));
    }
  }
  for (auto& group : groups) {
    group.options.order = LayerOrder::TopFirst;
    group.options.output_dir = (fs::path(dir) / group.name).string();
    group.options.serial = serial_for(request.id, group.name);
    try {
      (void)plan_compose(group.options);
    } catch (const std::exception& error) {
      std::string which;
      for (size_t index : group.guest_indices) {
        which += (which.empty() ? "" : ", ") +
                 describe_mount(request.mounts, plan.lowers[index].mount_index);
      }
      throw Error("{}: {}", which, error.what());
    }
  }

  bool create_upper = false;
  std::string upper_image;  // what QEMU opens read-write: the resolved file, never a symlink
  if (plan.upper) {
    struct stat st {};
    const std::string what = describe_mount(request.mounts, plan.upper->mount_index);
    upper_image = plan.upper->image;
    if (::lstat(plan.upper->image.c_str(), &st) == 0) {
      InputFile image = open_input_file(plan.upper->image, what + ": upper image");
      upper_image = image.resolved_path;
      std::string type = blkid_type(upper_image);
      if (type != "ext4") {
        throw Error("{}: {} exists but holds {}, not ext4", what, plan.upper->image,
                    type.empty() ? std::string("no filesystem") : type);
      }
    } else if (errno == ENOENT && plan.upper->mkfs_size) {
      create_upper = true;
      struct stat parent {};
      std::string parent_dir = fs::path(plan.upper->image).parent_path().string();
      if (::stat(parent_dir.c_str(), &parent) != 0 || !S_ISDIR(parent.st_mode)) {
        throw Error("{}: directory {} for the upper image does not exist", what, parent_dir);
      }
    } else {
      throw_errno("{}: cannot use the upper image {}", what, plan.upper->image);
    }
  }

  // Write: the hook directory (exclusively ours), the disks, then the documents.
  CreatedDirs created_state_dirs(make_state_dir(state_dir));
  if (::mkdir(dir.c_str(), 0700) != 0) throw_errno("cannot create {}", dir);
  DirectoryGuard guard(dir);
  std::vector<std::string> subdirs;
  for (const auto& group : groups) subdirs.push_back(group.name);
  HookState state;
  state.id = request.id;
  state.status = "building";
  state.input_sha256 = input_digest;
  state.dirs = subdirs;
  write_file_atomic((fs::path(dir) / kHookStateName).string(), to_json(state).dump(2) + "\n", 0600);

  json disks = json::array();
  std::vector<Storage> storages;
  std::vector<std::pair<size_t, Storage>> lower_storages;  // (guest index, storage)
  for (const auto& group : groups) {
    ComposeResult composed = compose(group.options);
    disks.push_back(disk_json(group.role, composed.disk_path, composed.disk_format, true,
                              composed.serial, false, with_device_id(composed.qemu, composed.serial)));
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
      lower_storages.emplace_back(guest_index, std::move(storage));
    }
  }
  std::sort(lower_storages.begin(), lower_storages.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  std::unique_ptr<NewExt4Image> new_upper;
  if (plan.upper) {
    if (create_upper) new_upper = std::make_unique<NewExt4Image>(plan.upper->image, *plan.upper->mkfs_size);
    const std::string serial = serial_for(request.id, "upper");
    disks.push_back(disk_json("upper", upper_image, "raw", false, serial, create_upper,
                              with_device_id(upper_qemu(upper_image, serial), serial)));
    Storage upper;
    upper.driver = "blk";
    upper.source = "serial:" + serial;
    upper.fstype = "ext4";
    upper.options = {std::string(marker::kMultiLayer) + "=true", std::string(marker::kOverlayUpper)};
    upper.mount_point = "upper";
    storages.push_back(std::move(upper));
  }
  json shares = json::array();
  if (plan.rootfs == RootfsKind::HostShare) {
    // A directory snapshot with no parents: the VM reaches it through a shared directory.
    const std::string tag = serial_for(request.id, "share");
    shares.push_back({{"tag", tag}, {"source", plan.host_share_source}, {"read_only", plan.read_only}});
    Storage share;
    share.driver = "virtio-fs";
    share.source = tag;
    share.fstype = "virtiofs";
    share.options = {plan.read_only ? "ro" : "rw"};
    for (const auto& option : plan.bind_options) share.options.push_back(option);
    share.mount_point = "rootfs";
    storages.push_back(std::move(share));
  }
  for (auto& [index, storage] : lower_storages) storages.push_back(std::move(storage));
  // Rootfs-wide markers go once, on the first storage (the upper when there is one).
  if (!storages.empty()) {
    for (auto& option : rootfs_markers(plan)) storages.front().options.push_back(option);
  }

  json notes = json::array();
  if (plan.upper_kind == UpperKind::GuestMemory) {
    notes.push_back(fmt::format("directory mode: the host upperdir {} and workdir {} are not "
                                "visible in the VM; the guest uses a memory-backed upper",
                                plan.host_upperdir, plan.host_workdir));
  }
  // Lowers mounted without dm-verity, so an operator sees what `auto` left unprotected.
  json unprotected = json::array();
  auto is_protected = [](const std::vector<std::string>& options) {
    return std::any_of(options.begin(), options.end(),
                       [](const std::string& o) { return is_dmverity_option(o); });
  };
  for (size_t i = 0; i < plan.lowers.size(); ++i) {
    if (!is_protected(extra_options[i])) unprotected.push_back(plan.lowers[i].image);
    for (size_t d = 0; d < plan.lowers[i].devices.size(); ++d) {
      if (!is_protected(device_options[i][d])) unprotected.push_back(plan.lowers[i].devices[d]);
    }
  }
  json output{{"id", request.id},
              {"dir", dir},
              {"disks", disks},
              {"storages", to_json(storages)},
              {"rootfs", rootfs_json(plan)},
              {"shares", shares},
              {"notes", notes},
              {"verity", {{"policy", std::string(to_string(request.verity))},
                          {"unprotected", unprotected}}}};
  if (plan.upper_kind == UpperKind::GuestMemory) {
    output["rootfs"]["host_upperdir"] = plan.host_upperdir;
    output["rootfs"]["host_workdir"] = plan.host_workdir;
  }

  // Every file this run made inside dir, for cleanup to remove exactly these.
  state.status = "complete";
  for (const auto& group : groups) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(fs::path(dir) / group.name)) {
      names.push_back(group.name + "/" + entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    for (auto& name : names) state.files.push_back(name);
  }
  state.files.push_back(kHookStorageName);
  state.files.push_back(kHookOutputName);
  state.files.push_back(kHookStateName);
  if (create_upper) state.created_upper = plan.upper->image;

  OutputTransaction transaction(dir);
  transaction.add(kHookStorageName, to_json(storages).dump(2) + "\n");
  transaction.add(kHookOutputName, output.dump(2) + "\n");
  transaction.add(kHookStateName, to_json(state).dump(2) + "\n", 0600);
  if (new_upper) new_upper->publish();
  transaction.commit();
  if (new_upper) new_upper->keep();
  guard.release();
  created_state_dirs.release();
  return output;
}

CleanupReport cleanup_hook(const std::string& id, const std::string& state_dir) {
  contract::validate_container_id(id);
  if (state_dir.empty()) throw Error("--state-dir is empty");
  const fs::path dir = fs::absolute(state_dir).lexically_normal() / id;
  CleanupReport report;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return report;  // nothing there: already clean
    throw_errno("cannot inspect {}", dir.string());
  }
  if (S_ISLNK(st.st_mode)) throw Error("{} is a symlink; refusing to clean it", dir.string());
  if (!S_ISDIR(st.st_mode)) throw Error("{} is not a directory; refusing to clean it", dir.string());
  report.existed = true;

  const fs::path state_path = dir / kHookStateName;
  HookState state;
  if (::lstat(state_path.c_str(), &st) == 0) {
    state = load_state(state_path.string());
    if (state.id != id) {
      throw Error("{} belongs to id '{}', not '{}'", state_path.string(), state.id, id);
    }
  } else {
    // No state file: the hook never got past creating the directory.
    state.status = "building";
  }
  auto remove_path = [&](const fs::path& path) {
    if (::unlink(path.c_str()) == 0) {
      report.removed.push_back(path.string());
    } else if (errno != ENOENT) {
      report.left.push_back(fmt::format("{}: {}", path.string(), std::strerror(errno)));
    }
  };
  auto checked_subdir = [&](const std::string& name) -> std::optional<fs::path> {
    if (!is_safe_name(name)) {
      report.left.push_back(fmt::format("{}: unsafe name '{}' in the state file", dir.string(), name));
      return std::nullopt;
    }
    fs::path sub = dir / name;
    struct stat sub_st {};
    if (::lstat(sub.c_str(), &sub_st) != 0) return std::nullopt;
    if (!S_ISDIR(sub_st.st_mode)) {
      report.left.push_back(fmt::format("{}: not a directory the hook made", sub.string()));
      return std::nullopt;
    }
    return sub;
  };

  const bool complete = state.status == "complete";
  const std::vector<std::string>& dirs = state.dirs;
  if (complete) {
    for (const std::string& relative : state.files) {
      if (relative == kHookStateName) continue;  // last, so an interrupted cleanup can resume
      auto slash = relative.find('/');
      if (slash == std::string::npos) {
        if (is_safe_name(relative)) remove_path(dir / relative);
      } else if (auto sub = checked_subdir(relative.substr(0, slash))) {
        std::string name = relative.substr(slash + 1);
        if (is_safe_name(name)) remove_path(*sub / name);
      }
    }
  } else {
    // Interrupted hook: its subdirectories were created fresh by it, so all they hold is
    // its own (possibly partial) compose output; also its staged temp files.
    for (const auto& name : dirs) {
      auto sub = checked_subdir(name);
      if (!sub) continue;
      for (const auto& entry : fs::directory_iterator(*sub)) {
        if (entry.is_symlink() || !entry.is_directory()) remove_path(entry.path());
      }
    }
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::string name = entry.path().filename().string();
      bool staged = name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos;
      bool ours = name == kHookOutputName || name == kHookStorageName;
      if ((staged || ours) && !entry.is_directory()) remove_path(entry.path());
    }
  }
  for (const auto& name : dirs) {
    if (!is_safe_name(name)) continue;
    fs::path sub = dir / name;
    if (::rmdir(sub.c_str()) == 0) {
      report.removed.push_back(sub.string());
    } else if (errno != ENOENT) {
      report.left.push_back(fmt::format("{}: {}", sub.string(), std::strerror(errno)));
    }
  }
  remove_path(state_path);
  if (::rmdir(dir.c_str()) == 0) {
    report.removed.push_back(dir.string());
  } else if (errno == ENOTEMPTY || errno == EEXIST) {
    report.kept.push_back(fmt::format("{}: holds files the hook did not create", dir.string()));
  } else if (errno != ENOENT) {
    report.left.push_back(fmt::format("{}: {}", dir.string(), std::strerror(errno)));
  }
  return report;
}

}  // namespace evmdk::host
