#pragma once
// Building blocks of the end-to-end scenarios: real layers made with mkfs.erofs, a disk made
// by `erofs-vmdk compose`, the upper Storage object, and the guest-side shell functions that
// drive `erofs-vmdk guest mount|teardown` and check what is left afterwards.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evmdk/host/compose/compose.h"
#include "qemu_test_util.h"

namespace evmdk::qemu {

// Non-empty when the built erofs-vmdk lacks a subcommand a scenario needs (another engineer's
// part that has not been merged yet): the scenario then skips, or fails under CI=true.
inline std::optional<std::string> missing_cli_command(const std::vector<std::string>& command) {
  std::vector<std::string> args = command;
  args.push_back("--help");
  auto result = test::cli(args);
  std::string joined;
  for (const auto& c : command) joined += (joined.empty() ? "" : " ") + c;
  // An unknown subcommand makes CLI11 print the top-level help instead of the subcommand's.
  auto at = result.out.find("Usage:");
  auto usage = at == std::string::npos ? "" : result.out.substr(at, result.out.find('\n', at) - at);
  if (result.exit_code == 0 && usage.find(" " + joined + " ") != std::string::npos) return std::nullopt;
  return "erofs-vmdk has no '" + joined + "' command yet (not merged?)";
}
#define EVMDK_REQUIRE_CLI(...) EVMDK_REQUIRE(::evmdk::qemu::missing_cli_command({__VA_ARGS__}))

inline const char* kUpperSerial = "evmdk-upper";

struct ComposedDisk {
  std::string dir;
  std::vector<std::string> qemu_args;  // qemu.json "drive_args"
  nlohmann::json storages;             // storage.json (lowers)
  std::string serial;
};

// Reads back what the guest and QEMU get from a directory compose wrote: qemu.json's drive
// arguments and storage.json, from the files, not from an in-memory result.
inline ComposedDisk read_composed_disk(const std::string& dir) {
  ComposedDisk disk;
  disk.dir = dir;
  auto qemu = nlohmann::json::parse(test::read_file(dir + "/qemu.json"));
  for (const auto& arg : qemu.at("drive_args")) disk.qemu_args.push_back(arg.get<std::string>());
  disk.serial = qemu.at("serial").get<std::string>();
  disk.storages = nlohmann::json::parse(test::read_file(dir + "/storage.json"));
  return disk;
}

// Composes the layers (top first) with the host library (what `erofs-vmdk compose` runs) into
// dir and reads the result back.
// format raw: disk.img, copying what cannot be shared (the temp dir need not have reflinks).
inline ComposedDisk compose_disk(const std::string& dir, host::ComposeMode mode,
                                 const std::vector<std::string>& layers,
                                 host::DiskFormat format = host::DiskFormat::Vmdk) {
  host::ComposeOptions options;
  options.mode = mode;
  options.format = format;
  options.allow_copy = format == host::DiskFormat::Raw;
  options.output_dir = dir;
  for (const auto& layer : layers) options.layers.push_back({layer, {}});
  try {
    host::compose(options);
  } catch (const std::exception& error) {
    throw HarnessError(std::string("compose failed: ") + error.what());
  }
  return read_composed_disk(dir);
}

// The container's writable upper: an ext4 virtio disk found by serial, as the spec describes.
inline nlohmann::json upper_storage(const std::string& serial = kUpperSerial) {
  return {{"driver", "blk"},
          {"driver_options", nlohmann::json::array()},
          {"source", "serial:" + serial},
          {"fstype", "ext4"},
          {"options", {"rw", "X-kata.multi-layer=true", "X-kata.overlay-upper"}},
          {"mount_point", "upper"}};
}

// storage.json for the guest: compose's lowers plus the upper.
inline std::string guest_storage_json(const ComposedDisk& disk) {
  nlohmann::json all = disk.storages;
  all.push_back(upper_storage());
  return all.dump(2);
}

// Layer trees -------------------------------------------------------------------------------

inline void make_whiteout(const std::string& path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  if (::mknod(path.c_str(), S_IFCHR | 0000, ::makedev(0, 0)) != 0) {
    throw HarnessError("mknod whiteout " + path + " failed (needs root)");
  }
}

inline void make_opaque(const std::string& dir) {
  std::filesystem::create_directories(dir);
  if (::setxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
    throw HarnessError("setxattr trusted.overlay.opaque on " + dir + " failed (needs root)");
  }
}

// Three layers, top first: top.erofs, middle.erofs, base.erofs. The base carries a static
// busybox so a process can run chrooted in the rootfs.
//   etc/motd              base, top                 -> top wins
//   opt/app/version       v1 base, v2 middle, v3 top -> v3
//   opt/app/tool          middle only               -> visible
//   opt/app/legacy.conf   base, whiteout in middle   -> gone
//   usr/share/doc/        base has app/README; opaque in top with top-only -> only top-only
inline std::vector<std::string> make_three_layers(const std::string& work,
                                                  const std::string& busybox) {
  std::string base = work + "/trees/base", middle = work + "/trees/middle", top = work + "/trees/top";
  test::make_tree(base, {{"etc/motd", "base layer greeting\n"},
                         {"etc/os-release", "NAME=\"erofs-vmdk qemu test\"\n"},
                         {"opt/app/version", "v1\n"},
                         {"opt/app/legacy.conf", "old config from base\n"},
                         {"usr/share/doc/app/README", "base documentation\n"},
                         {"tmp/", ""},
                         {"proc/", ""}});
  std::filesystem::create_directories(base + "/bin");
  std::filesystem::copy_file(busybox, base + "/bin/busybox");
  test::make_tree(middle, {{"opt/app/version", "v2\n"}, {"opt/app/tool", "middle layer tool\n"}});
  make_whiteout(middle + "/opt/app/legacy.conf");
  test::make_tree(top, {{"etc/motd", "top layer greeting\n"},
                        {"opt/app/version", "v3\n"},
                        {"usr/share/doc/top-only", "top documentation\n"}});
  make_opaque(top + "/usr/share/doc");
  std::vector<std::string> images;
  int n = 0;
  for (const auto& [name, tree] : std::vector<std::pair<std::string, std::string>>{
           {"top", top}, {"middle", middle}, {"base", base}}) {
    std::string image = work + "/" + name + ".erofs";
    test::make_erofs(tree, image, "3a3a3a3a-0000-4000-8000-00000000000" + std::to_string(++n));
    images.push_back(image);
  }
  return images;
}

// Checks of the merged view make_three_layers promises, on the rootfs at $R; the result names
// are three_layer_view_checks().
inline constexpr std::string_view kThreeLayerViewScript = R"SH(
evmdk_expect_eq top-wins "$(cat $R/etc/motd)" "top layer greeting"
evmdk_expect_eq top-wins-over-two "$(cat $R/opt/app/version)" "v3"
evmdk_expect_eq lower-visible "$(cat $R/opt/app/tool)" "middle layer tool"
evmdk_expect_eq base-visible "$(cat $R/etc/os-release)" 'NAME="erofs-vmdk qemu test"'
evmdk_check whiteout-hides sh -c "! ls $R/opt/app/legacy.conf 2>/dev/null"
evmdk_check opaque-hides sh -c "! ls -d $R/usr/share/doc/app 2>/dev/null"
evmdk_expect_eq opaque-keeps-own "$(cat $R/usr/share/doc/top-only)" "top documentation"
evmdk_check three-read-only-lowers sh -c "grep ' erofs ' /proc/mounts | grep -v ' ro,' && exit 1; grep -c ' erofs ' /proc/mounts | grep -qx 3"
)SH";

inline std::vector<std::string> three_layer_view_checks() {
  return {"top-wins",     "top-wins-over-two", "lower-visible",    "base-visible",
          "whiteout-hides", "opaque-hides",    "opaque-keeps-own", "three-read-only-lowers"};
}

// Guest shell ------------------------------------------------------------------------------

// What `evmdk_check_clean PREFIX` checks after a teardown: result "PREFIX-<suffix>" from the
// lib.sh function named. The shell function and the names the host requires both come from
// this list, so a new check is required everywhere at once.
inline constexpr std::pair<std::string_view, std::string_view> kCleanChecks[] = {
    {"no-mounts", "evmdk_leftover_mounts"},
    {"no-loops", "evmdk_leftover_loops"},
    {"no-cgroups", "evmdk_leftover_cgroups"},
    {"no-dm", "evmdk_leftover_dm"},
};

// Shell functions every scenario script gets. The erofs-vmdk guest CLI is called only here,
// so an interface change is a one-place edit.
inline std::string scenario_prelude() {
  std::string prelude = R"SH(
EVMDK_BASE=/run/erofs-vmdk
# guest mount's JSON report (which paths it took) is kept in /run/evmdk-mount-ID.json for
# evmdk_mount_field. EVMDK_MOUNT_TIMEOUT_MS, when set, bounds the wait for disks (hot-plug);
# EVMDK_MOUNT_PARALLEL, when set, is --parallel (lowers mounted at once); EVMDK_STORAGES, when
# set, is the storage list (several containers in one guest), else /job/storage.json.
evmdk_guest_mount() {  # ID ROOTFS
  local mount_out mount_rc
  mount_out=$(erofs-vmdk guest mount --storages "${EVMDK_STORAGES:-/job/storage.json}" \
    --id "$1" --rootfs "$2" \
    --base "$EVMDK_BASE" ${EVMDK_MOUNT_TIMEOUT_MS:+--timeout-ms "$EVMDK_MOUNT_TIMEOUT_MS"} \
    ${EVMDK_MOUNT_PARALLEL:+--parallel "$EVMDK_MOUNT_PARALLEL"})
  mount_rc=$?
  printf '%s\n' "$mount_out" > "/run/evmdk-mount-$1.json"
  printf '%s\n' "$mount_out"
  return $mount_rc
}
# A top-level scalar of the last guest mount report of ID: evmdk_mount_field c1 overlay_method
evmdk_mount_field() {  # ID FIELD
  sed -n 's/^  "'"$2"'": "\{0,1\}\([^",]*\)"\{0,1\},\{0,1\}$/\1/p' "/run/evmdk-mount-$1.json"
}
evmdk_guest_teardown() {  # ID ROOTFS [CGROUP]
  if [ -n "${3:-}" ]; then
    erofs-vmdk guest teardown --id "$1" --rootfs "$2" --base "$EVMDK_BASE" --cgroup "$3"
  else
    erofs-vmdk guest teardown --id "$1" --rootfs "$2" --base "$EVMDK_BASE"
  fi
}
# Reports rootfs-ready time (seconds since kernel start) as a value.
evmdk_mark_ready() { evmdk_value "${1:-rootfs-ready-seconds}" "$(evmdk_uptime)"; }
# The checks every clean teardown must pass.
evmdk_check_clean() {  # PREFIX
)SH";
  for (const auto& [suffix, function] : kCleanChecks) {
    prelude += "  evmdk_check \"$1-" + std::string(suffix) + "\" " + std::string(function) + "\n";
  }
  return prelude + "}\n";
}

// The checks a scenario must report: its own, then for each prefix what `evmdk_check_clean
// PREFIX` reports. (Results not listed are still reported; any FAIL fails the scenario.)
inline std::vector<std::string> expected_checks(std::vector<std::string> own,
                                                std::initializer_list<std::string> clean_prefixes = {}) {
  for (const auto& prefix : clean_prefixes) {
    for (const auto& check : kCleanChecks) own.push_back(prefix + "-" + std::string(check.first));
  }
  return own;
}

// Which paths `erofs-vmdk guest mount` must take on the lane's guest kernel, as checks on its
// JSON report. 6.8+ has overlayfs' `lowerdir+` (fsconfig, one lower at a time) and EROFS
// flat-device mode (the extra devices read from the primary at mapped_blkaddr); 6.1 has
// neither, so the driver falls back to mount(2) with relative lowerdir paths and to read-only
// loop slices passed as device=. Kernels in between (one feature but maybe not the other) are
// no lane of ours: refuse to guess.
enum class FlatPath {
  kNone,         // no multi-device lower: flat_device_mode is not checked
  kNative,       // a flat disk: flat-device mode exactly where the kernel has it
  kDeviceSlices  // a flat disk that must use device= everywhere (dm-verity)
};

struct MountPathChecks {
  std::string script;               // runs after a successful evmdk_guest_mount ID
  std::vector<std::string> names;   // the checks it reports
  bool native = false;              // the lane's kernel has both native paths
};

inline bool kernel_has_native_mount_paths(const GuestEnvironment& env) {
  auto version = env.kernel_major_minor();
  if (version >= std::pair{6, 8}) return true;
  if (version <= std::pair{6, 1}) return false;
  throw HarnessError("no expectation of guest mount paths for kernel " + env.kernel_version +
                     " (lanes are 6.1 and 6.12)");
}

// `prefix` goes before each check's name (several containers in one guest).
inline MountPathChecks mount_path_checks(const GuestEnvironment& env, const std::string& id,
                                         FlatPath flat, const std::string& prefix = "") {
  MountPathChecks checks;
  checks.native = kernel_has_native_mount_paths(env);
  checks.script = fmt::format(
      "evmdk_expect_eq {}overlay-method \"$(evmdk_mount_field {} overlay_method)\" \"{}\"\n",
      prefix, id, checks.native ? "fsconfig lowerdir+" : "mount(2) relative paths");
  checks.names.push_back(prefix + "overlay-method");
  if (flat != FlatPath::kNone) {
    bool expected = flat == FlatPath::kNative && checks.native;
    checks.script += fmt::format(
        "evmdk_expect_eq {}flat-device-mode \"$(evmdk_mount_field {} flat_device_mode)\" {}\n",
        prefix, id, expected ? "true" : "false");
    checks.names.push_back(prefix + "flat-device-mode");
  }
  return checks;
}

// Prints (to the test's output) which mount paths the guest took, as its report said: the
// detail of each check whose name ends in "overlay-method" or "flat-device-mode".
inline void print_mount_paths(const GuestEnvironment& env, const GuestOutcome& outcome,
                              const std::string& scenario) {
  for (const auto& result : outcome.results) {
    for (std::string_view suffix : {"overlay-method", "flat-device-mode"}) {
      if (result.name.size() >= suffix.size() &&
          result.name.compare(result.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        std::fprintf(stderr, "[mount path] %s, guest kernel %s: %s = %s\n", scenario.c_str(),
                     env.kernel_version.c_str(), result.name.c_str(), result.detail.c_str());
      }
    }
  }
}

inline GuestJob scenario_job(const std::string& storage_json, const std::string& body) {
  GuestJob job;
  job.files["storage.json"] = storage_json;
  job.scenario = scenario_prelude() + body;
  return job;
}

inline Drive upper_drive(const std::string& image) { return {image, "raw", false, kUpperSerial}; }

// A scenario on one composed disk: compose() builds it and a fresh ext4 upper, disk_config()
// boots a guest with both attached, boot() runs a scenario script there with storage.json =
// compose's lowers + the upper.
class ComposedDiskTest : public QemuTest {
 protected:
  void compose(host::ComposeMode mode, const std::vector<std::string>& layers,
               uint64_t upper_mib = 32, host::DiskFormat format = host::DiskFormat::Vmdk) {
    disk_ = compose_disk(path("disk"), mode, layers, format);
    make_ext4_disk(path("upper.img"), upper_mib, temp_.path());
  }

  // make_three_layers composed in gpt mode.
  void compose_three_layers(uint64_t upper_mib = 32) {
    compose(host::ComposeMode::Gpt, make_three_layers(temp_.path(), env_.busybox), upper_mib);
  }

  GuestConfig disk_config(const std::string& name) const {
    GuestConfig c = config(name);
    c.extra_qemu_args = disk_.qemu_args;
    c.drives = {upper_drive(path("upper.img"))};
    return c;
  }

  // files: more /job/<name> contents for the script.
  GuestOutcome boot(const GuestConfig& config, const std::string& body,
                    const std::map<std::string, std::string>& files = {}) {
    auto job = scenario_job(guest_storage_json(disk_), body);
    job.files.insert(files.begin(), files.end());
    return run_guest(env_, config, job);
  }

  ComposedDisk disk_;
};

}  // namespace evmdk::qemu
