#pragma once
// The QEMU guest harness: builds (and caches) a minimal initramfs holding busybox, the
// erofs-vmdk command with its shared libraries and the kernel modules the guest needs; appends
// a per-run "job" (scenario script + files such as storage.json); boots the Debian kernel in
// /boot (or the lane's kernel and QEMU, see GuestEnvironment) under TCG with the given disks;
// and parses the strict result protocol from the second serial port (see guest_scripts.h). Header-only so tests and bench/ can both use it without
// build-system changes; it depends on nothing but the standard library and fmt.
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cpio.h"
#include "guest_scripts.h"
#include "process.h"

namespace evmdk::qemu {

namespace fs = std::filesystem;

// Modules insmod'ed in the guest, by name; their dependencies (modules.dep) are added and
// loaded first. crc32c-intel needs SSE4.2 and may refuse to load under TCG: crc32c_generic is
// the fallback, loaded explicitly because nothing in the guest can autoload it.
inline const std::vector<std::string>& guest_module_names() {
  static const std::vector<std::string> names{
      "virtio_ring", "virtio",  "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
      "virtio_pci",  "virtio_blk", "crc32c-intel",        "crc32c_generic",
      "libcrc32c",   "erofs",   "jbd2",                  "mbcache",
      "crc16",       "ext4",    "overlay",               "loop",
      "dm-mod",      "dm-bufio", "dm-verity",             "fuse",
      "virtiofs",    "scsi_common", "scsi_mod",           "sd_mod",
      "virtio_scsi"};
  return names;
}

// What a virtio-pmem guest loads on top of guest_module_names(), only when a run asks for it
// (GuestConfig::extra_modules): the NVDIMM core, the pmem block driver (nd_btt is its
// dependency, from modules.dep), the virtio flush glue and the virtio-pmem driver itself. The
// same names on 6.1 (plain .ko) and 6.12 (.ko.xz; dax.ko is built into both).
inline const std::vector<std::string>& pmem_module_names() {
  static const std::vector<std::string> names{"libnvdimm", "nd_pmem", "nd_virtio", "virtio_pmem"};
  return names;
}

// Splits a ':'-separated list (EVMDK_QEMU_DATADIRS), dropping empty entries.
inline std::vector<fs::path> split_path_list(const std::string& list) {
  std::vector<fs::path> out;
  std::string::size_type start = 0;
  while (start <= list.size()) {
    auto end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) out.emplace_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// What the host offers for booting guests. detect() finds everything or throws saying what is
// missing. The QEMU and the kernel are chosen per run by environment variables, so one build
// runs the same scenarios on every compatibility lane (scripts/test.sh, docs/testing.md):
//   EVMDK_QEMU_BINARY=/path/qemu-system-x86_64   (default: qemu-system-x86_64 on PATH)
//   EVMDK_QEMU_DATADIRS=dir[:dir...]             (each becomes -L dir, searched in order)
//   EVMDK_QEMU_KERNEL=/path/vmlinuz-<release>    (default: the newest /boot/vmlinuz-*)
//   EVMDK_QEMU_MODULES_DIR=/path/<release>       (default: /lib/modules/<release>)
struct GuestEnvironment {
  fs::path qemu = "qemu-system-x86_64";
  std::vector<fs::path> qemu_datadirs;
  fs::path kernel;          // /boot/vmlinuz-<version>
  std::string kernel_version;
  fs::path modules_dir;     // /lib/modules/<version>
  fs::path busybox;         // static busybox
  fs::path cli;             // the built erofs-vmdk command
  fs::path cache_dir;       // where built initramfs bases are kept between tests
  bool kvm = false;         // only with EVMDK_QEMU_KVM=1: nested KVM hangs on the dev machines

  static GuestEnvironment detect(const fs::path& cli_path) {
    GuestEnvironment env;
    env.cli = fs::absolute(cli_path);
    if (!fs::exists(env.cli)) throw HarnessError("erofs-vmdk binary not found at " + env.cli.string());
    if (const char* qemu = std::getenv("EVMDK_QEMU_BINARY"); qemu && *qemu) {
      env.qemu = qemu;
      if (!fs::exists(env.qemu)) {
        throw HarnessError("EVMDK_QEMU_BINARY=" + env.qemu.string() + " does not exist");
      }
    }
    if (const char* dirs = std::getenv("EVMDK_QEMU_DATADIRS")) {
      env.qemu_datadirs = split_path_list(dirs);
      for (const auto& dir : env.qemu_datadirs) {
        if (!fs::is_directory(dir)) {
          throw HarnessError("EVMDK_QEMU_DATADIRS names " + dir.string() + ", which is not a directory");
        }
      }
    }
    if (const char* kernel = std::getenv("EVMDK_QEMU_KERNEL"); kernel && *kernel) {
      env.kernel = kernel;
      if (!fs::exists(env.kernel)) {
        throw HarnessError("EVMDK_QEMU_KERNEL=" + env.kernel.string() + " does not exist");
      }
    } else {
      std::vector<fs::path> kernels;
      for (const auto& entry : fs::directory_iterator("/boot")) {
        if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) kernels.push_back(entry.path());
      }
      if (kernels.empty()) throw HarnessError("no /boot/vmlinuz-* (install linux-image-amd64)");
      std::sort(kernels.begin(), kernels.end());
      env.kernel = kernels.back();
    }
    env.kernel_version = env.kernel.filename().string().substr(std::string("vmlinuz-").size());
    if (const char* modules = std::getenv("EVMDK_QEMU_MODULES_DIR"); modules && *modules) {
      env.modules_dir = modules;
    } else {
      env.modules_dir = fs::path("/lib/modules") / env.kernel_version;
    }
    if (!fs::exists(env.modules_dir / "modules.dep")) {
      throw HarnessError("no " + (env.modules_dir / "modules.dep").string() + " for kernel " +
                         env.kernel.string() + " (set EVMDK_QEMU_MODULES_DIR, run depmod -b)");
    }
    for (const char* candidate : {"/bin/busybox", "/usr/bin/busybox"}) {
      if (fs::exists(candidate)) {
        env.busybox = candidate;
        break;
      }
    }
    if (env.busybox.empty()) throw HarnessError("busybox-static is not installed");
    // build/tools/erofs-vmdk -> build/qemu-cache
    env.cache_dir = env.cli.parent_path().parent_path() / "qemu-cache";
    if (const char* kvm = std::getenv("EVMDK_QEMU_KVM")) env.kvm = std::string(kvm) == "1";
    return env;
  }

  // {major, minor} of the guest kernel ("6.12.95+deb12-amd64" -> {6, 12}).
  std::pair<int, int> kernel_major_minor() const {
    int major = 0, minor = 0;
    if (std::sscanf(kernel_version.c_str(), "%d.%d", &major, &minor) != 2) {
      throw HarnessError("cannot read a version from kernel " + kernel.string());
    }
    return {major, minor};
  }
};

namespace detail {

inline uint64_t fnv1a(uint64_t hash, const std::string& data) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

inline std::string file_identity(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw HarnessError("cannot stat " + path.string());
  return fmt::format("{}:{}:{}.{}:{};", path.string(), st.st_size, st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec, st.st_ino);
}

// Module names -> paths relative to modules_dir, dependencies before dependents.
inline std::vector<std::string> ordered_modules(const fs::path& modules_dir,
                                                const std::vector<std::string>& names) {
  auto normalize = [](std::string name) {
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
  };
  auto module_name = [&](const std::string& relative) {
    std::string base = fs::path(relative).filename().string();
    base = base.substr(0, base.find(".ko"));
    return normalize(base);
  };
  std::map<std::string, std::string> path_of;                 // name -> relative path
  std::map<std::string, std::vector<std::string>> deps_of;    // relative path -> deps
  std::istringstream dep(read_text(modules_dir / "modules.dep"));
  std::string line;
  while (std::getline(dep, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string module = line.substr(0, colon);
    std::istringstream rest(line.substr(colon + 1));
    std::vector<std::string> deps;
    for (std::string d; rest >> d;) deps.push_back(d);
    path_of[module_name(module)] = module;
    deps_of[module] = deps;
  }
  std::set<std::string> builtin;
  std::istringstream builtin_list(read_text(modules_dir / "modules.builtin"));
  while (std::getline(builtin_list, line)) builtin.insert(module_name(line));

  std::vector<std::string> order;
  std::set<std::string> seen;
  std::function<void(const std::string&)> visit = [&](const std::string& relative) {
    if (!seen.insert(relative).second) return;
    for (const auto& d : deps_of[relative]) visit(d);
    order.push_back(relative);
  };
  for (const auto& name : names) {
    auto found = path_of.find(normalize(name));
    if (found == path_of.end()) {
      if (builtin.count(normalize(name))) continue;  // built into the kernel: nothing to load
      throw HarnessError("kernel module " + name + " not found in " +
                         (modules_dir / "modules.dep").string());
    }
    visit(found->second);
  }
  return order;
}

// Adds the modules (paths relative to modules_dir, in load order) under lib/modules/ and
// returns the load list /init reads (one path below /lib/modules per line). busybox's insmod
// reads only plain .ko files; newer kernels (6.12) ship .ko.xz, decompressed in scratch.
inline std::string pack_modules(CpioWriter& cpio, const fs::path& modules_dir,
                                const std::vector<std::string>& modules, const fs::path& scratch) {
  std::string module_list;
  for (const auto& module : modules) {
    std::string in_guest = module;
    fs::path source = modules_dir / module;
    if (module.size() > 3 && module.compare(module.size() - 3, 3, ".xz") == 0) {
      in_guest = module.substr(0, module.size() - 3);
      fs::path packed = scratch / "modules" / module;
      fs::create_directories(packed.parent_path());
      fs::copy_file(source, packed, fs::copy_options::overwrite_existing);
      auto unxz = run_command({"xz", "--decompress", "--force", packed.string()}, scratch);
      if (unxz.status != 0) {
        throw HarnessError("xz --decompress " + source.string() + " failed: " + unxz.output);
      }
      source = scratch / "modules" / in_guest;
    }
    cpio.file_from("lib/modules/" + in_guest, source, 0644);
    module_list += in_guest + "\n";
  }
  return module_list;
}

// The modules `names` need (with dependencies, in load order) that the base initramfs does not
// already load: what a run's extra_modules add to its job archive.
inline std::vector<std::string> modules_beyond_base(const fs::path& modules_dir,
                                                    const std::vector<std::string>& names) {
  auto base = ordered_modules(modules_dir, guest_module_names());
  std::set<std::string> loaded(base.begin(), base.end());
  std::vector<std::string> extra;
  for (const auto& module : ordered_modules(modules_dir, names)) {
    if (!loaded.count(module)) extra.push_back(module);
  }
  return extra;
}

// Shared libraries of a dynamically linked binary, as ldd resolves them (including the loader).
inline std::vector<fs::path> shared_libraries(const fs::path& binary, const fs::path& scratch) {
  auto ldd = run_command({"ldd", binary.string()}, scratch, std::chrono::seconds(60));
  if (ldd.status != 0) {
    if (ldd.output.find("not a dynamic executable") != std::string::npos) return {};
    throw HarnessError("ldd " + binary.string() + " failed: " + ldd.output);
  }
  std::vector<fs::path> libraries;
  std::istringstream lines(ldd.output);
  std::string line;
  static const std::regex resolved(R"(=>\s+(/\S+)\s+\()");
  static const std::regex loader(R"(^\s*(/\S+)\s+\()");
  while (std::getline(lines, line)) {
    std::smatch match;
    if (line.find("not found") != std::string::npos) {
      throw HarnessError("ldd " + binary.string() + ": " + line);
    }
    if (std::regex_search(line, match, resolved) || std::regex_search(line, match, loader)) {
      libraries.emplace_back(match[1].str());
    }
  }
  return libraries;
}

}  // namespace detail

// The cached base initramfs for this environment: rebuilt when the erofs-vmdk binary, busybox,
// the kernel, or the guest scripts change. Concurrent tests may race to build it; each builds
// into its own temp file and renames, so readers only ever see a complete archive.
inline fs::path base_initramfs(const GuestEnvironment& env) {
  std::vector<std::string> modules = detail::ordered_modules(env.modules_dir, guest_module_names());
  // Keyed on everything the archive is made of: the kernel and the modules directory are
  // chosen per lane (EVMDK_QEMU_KERNEL, EVMDK_QEMU_MODULES_DIR), so both are in the key, not
  // just the release string. The QEMU binary is not: it boots the same archive.
  std::string identity = "evmdk-initramfs-v2;" + detail::file_identity(env.cli) +
                         detail::file_identity(env.busybox) + env.kernel_version + ";" +
                         detail::file_identity(env.kernel) +
                         detail::file_identity(env.modules_dir / "modules.dep") +
                         std::string(kGuestInit) + std::string(kGuestLib);
  for (const auto& m : modules) identity += m + ";";
  uint64_t key = detail::fnv1a(14695981039346656037ULL, identity);
  fs::create_directories(env.cache_dir);
  fs::path target = env.cache_dir / fmt::format("base-{:016x}.cpio", key);
  if (fs::exists(target)) return target;

  fs::path staging = env.cache_dir / fmt::format(".staging-{:016x}-{}", key, ::getpid());
  fs::create_directories(staging);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } cleanup{staging};

  // Debug info is most of the binary's size and useless in the guest.
  fs::path cli_copy = staging / "erofs-vmdk";
  auto strip = run_command({"strip", "--strip-debug", "-o", cli_copy.string(), env.cli.string()},
                           staging);
  if (strip.status != 0) fs::copy_file(env.cli, cli_copy, fs::copy_options::overwrite_existing);

  fs::path archive_temp = staging / "base.cpio";
  CpioWriter cpio(archive_temp);
  for (const char* dir : {"dev", "proc", "sys", "run", "tmp", "mnt", "bin", "sbin", "usr/bin",
                          "usr/sbin", "etc/evmdk", "lib/evmdk", "job"}) {
    cpio.directory(dir);
  }
  cpio.char_device("dev/console", 5, 1, 0600);
  cpio.char_device("dev/null", 1, 3, 0666);
  cpio.char_device("dev/ttyS0", 4, 64, 0600);
  cpio.char_device("dev/ttyS1", 4, 65, 0600);
  cpio.file("init", std::string(kGuestInit), 0755);
  cpio.file("lib/evmdk/lib.sh", std::string(kGuestLib), 0644);
  cpio.file_from("bin/busybox", env.busybox, 0755);
  cpio.file_from("usr/bin/erofs-vmdk", cli_copy, 0755);
  for (const auto& library : detail::shared_libraries(env.cli, staging)) {
    cpio.file_from(library.string(), library, 0755);
  }
  cpio.file("etc/evmdk/modules", detail::pack_modules(cpio, env.modules_dir, modules, staging));
  cpio.finish();
  fs::rename(archive_temp, target);

  // Old bases (from earlier builds of the binary) are dead weight; keep only recent ones so a
  // concurrent test that picked one a moment ago can still read it.
  auto now = fs::file_time_type::clock::now();
  for (const auto& entry : fs::directory_iterator(env.cache_dir)) {
    auto name = entry.path().filename().string();
    if (entry.path() == target || name.rfind("base-", 0) != 0) continue;
    std::error_code ec;
    auto age = now - fs::last_write_time(entry.path(), ec);
    if (!ec && age > std::chrono::hours(1)) fs::remove(entry.path(), ec);
  }
  return target;
}

namespace detail {

// QEMU option values use ',' as separator; a literal comma is written twice.
inline std::string qemu_escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

}  // namespace detail

// A virtio-blk disk attached to the guest.
struct Drive {
  fs::path file;
  std::string format = "raw";  // "raw" or "vmdk"
  bool read_only = true;
  std::string serial;          // /sys/block/vdX/serial in the guest (at most 20 bytes)
};

// A file attached as a virtio-pmem device (guest: /dev/pmemN, and its partitions). QEMU maps
// the file into the guest's physical address space (memory-backend-file, share=on: the guest
// reads the host's page-cache pages, no copy); readonly=on makes that mapping read-only.
// The guest's nd_pmem maps the device in 2 MiB sections: a size that is not a multiple of
// 2 MiB gives "misaligned, unable to map" and no device (the harness passes it anyway, so a
// test can show that). QEMU wants the file at least `size` bytes, a multiple of 4 KiB.
struct PmemDevice {
  fs::path file;
  uint64_t size = 0;     // bytes mapped; 0: the file's size
  std::string pci_addr;  // optional PCI slot ("0x10"): pmemN numbering follows PCI probe order
  // Non-empty: the -object/-device arguments as given (compose's qemu.json "pmem" "args"),
  // used as they are; `size` (then required) still counts toward maxmem, `file` only names it.
  std::vector<std::string> args = {};
};

struct GuestConfig {
  std::string name = "guest";              // names the log files in work_dir
  fs::path work_dir;                       // initrd, console and result files go here
  std::vector<Drive> drives;               // attached in order: vda, vdb, ...
  std::vector<std::string> extra_qemu_args;  // e.g. compose's qemu.json arguments
  int memory_mib = 512;
  std::chrono::seconds timeout{240};       // hard limit for the whole boot
  std::string extra_kernel_args;
  fs::path qmp_socket;                     // non-empty: a QMP server there (-qmp unix:...)
  std::vector<PmemDevice> pmem_devices;    // attached after the drives, in order
  // Modules (by name, dependencies resolved) loaded after the base ones, e.g.
  // pmem_module_names(); they travel in this run's job archive, so the base stays the same.
  std::vector<std::string> extra_modules;
};

// The -m value and the -object/-device arguments that attach `devices` to a guest with
// memory_mib of RAM. A virtio-pmem device is a memory device: QEMU maps it into the guest's
// device-memory region, which lies above RAM (at 4 GiB for a 512 MiB guest) and whose usable
// size is maxmem - RAM. Seen on QEMU 7.2 and 10: the devices are placed back to back from the
// region's start in command-line order, and a device that does not fit is refused ("not
// enough space, currently 0x800000 in use of total space for memory devices 0xd00000"), so
// maxmem = RAM + sum(sizes) is the least that works (rounded up to a MiB, the unit of -m).
// slots= counts pc-dimm hot-plug slots: virtio-pmem takes none and neither QEMU needs it for
// maxmem, but the attach line states one per device (harmless: a slot reserves guest-physical
// address space, no memory). Back to back placement is also why every size should be a
// multiple of 2 MiB: a 3 MiB device puts the next one at +3 MiB, and the guest's nd_pmem maps
// in 2 MiB sections.
struct PmemAttachArgs {
  std::string memory;             // the -m value
  std::vector<std::string> args;  // -object ... -device ... per device
};

inline PmemAttachArgs pmem_attach_args(int memory_mib, const std::vector<PmemDevice>& devices) {
  PmemAttachArgs out;
  if (devices.empty()) {
    out.memory = std::to_string(memory_mib);
    return out;
  }
  uint64_t total = 0;
  int index = 0;
  for (const auto& device : devices) {
    uint64_t size = device.size;
    if (size == 0) {
      std::error_code ec;
      size = fs::file_size(device.file, ec);
      if (ec) throw HarnessError("pmem device " + device.file.string() + ": " + ec.message());
    }
    if (size == 0) throw HarnessError("pmem device " + device.file.string() + " is empty");
    if (total + size < total) throw HarnessError("pmem devices: total size overflows");
    total += size;
    std::string id = fmt::format("pmem{}", index++);
    if (!device.args.empty()) {
      if (device.size == 0) throw HarnessError("pmem device " + device.file.string() + ": args without size");
      out.args.insert(out.args.end(), device.args.begin(), device.args.end());
      continue;
    }
    out.args.push_back("-object");
    out.args.push_back(
        fmt::format("memory-backend-file,id={}-mem,share=on,readonly=on,mem-path={},size={}", id,
                    detail::qemu_escape(device.file.string()), size));
    out.args.push_back("-device");
    out.args.push_back(fmt::format("virtio-pmem-pci,memdev={}-mem,id={}{}", id, id,
                                   device.pci_addr.empty() ? "" : ",addr=" + device.pci_addr));
  }
  uint64_t total_mib = (total + (1u << 20) - 1) >> 20;
  out.memory = fmt::format("{}M,slots={},maxmem={}M", memory_mib, devices.size(),
                           static_cast<uint64_t>(memory_mib) + total_mib);
  return out;
}

// The per-run part of the initramfs, unpacked under /job in the guest.
struct GuestJob {
  std::string scenario;                       // /job/scenario.sh, sourced by /init
  std::map<std::string, std::string> files;   // /job/<name> -> contents
  std::map<std::string, fs::path> host_files; // /job/<name> -> copied from the host
};

struct CheckResult {
  std::string name;
  bool passed = false;
  std::string detail;
};

struct GuestOutcome {
  bool done = false;       // EVMDK-DONE seen
  bool timed_out = false;  // the hard limit killed qemu
  std::optional<int> script_status;
  int qemu_status = -1;
  std::vector<CheckResult> results;
  std::map<std::string, double> values;
  std::vector<std::string> protocol_errors;
  std::string console;      // everything the guest printed on ttyS0
  std::string qemu_output;  // qemu's own stdout/stderr
  std::string command_line;
  double wall_seconds = 0;

  const CheckResult* find(const std::string& name) const {
    for (const auto& r : results) {
      if (r.name == name) return &r;
    }
    return nullptr;
  }

  // Everything wrong with this run, given the checks the scenario must have passed. Empty
  // means: qemu ended normally after EVMDK-DONE, the script exited 0, the results port held
  // only well-formed lines, every expected check PASSED and no check FAILED.
  std::vector<std::string> problems(const std::vector<std::string>& expected) const {
    std::vector<std::string> found;
    if (timed_out) found.push_back(fmt::format("timed out after {:.0f} s (qemu killed)", wall_seconds));
    if (!done) found.push_back("the guest never reported EVMDK-DONE");
    if (!script_status) {
      found.push_back("the scenario script never reported its exit status");
    } else if (*script_status != 0) {
      found.push_back(fmt::format("the scenario script exited with status {}", *script_status));
    }
    for (const auto& e : protocol_errors) found.push_back("protocol: " + e);
    for (const auto& r : results) {
      if (!r.passed) found.push_back(fmt::format("check {} FAILED: {}", r.name, r.detail));
    }
    for (const auto& name : expected) {
      if (!find(name)) found.push_back("check " + name + " was never reported");
    }
    return found;
  }

  std::string report(const std::vector<std::string>& expected = {}) const {
    std::string text;
    for (const auto& p : problems(expected)) text += "  - " + p + "\n";
    text += "qemu: " + command_line + "\nqemu exit status " + std::to_string(qemu_status) +
            fmt::format(", wall time {:.1f} s\n", wall_seconds);
    if (!qemu_output.empty()) text += "---- qemu output ----\n" + qemu_output + "\n";
    text += "---- guest console ----\n" + console + "\n---- end of guest console ----\n";
    return text;
  }
};

namespace detail {

inline void parse_results(const std::string& text, GuestOutcome& outcome) {
  static const std::regex result_line(R"(EVMDK-RESULT ([A-Za-z0-9_.:/@+-]+) (PASS|FAIL)(?: (.*))?)");
  static const std::regex value_line(R"(EVMDK-VALUE ([A-Za-z0-9_.:/@+-]+) (-?[0-9]+(?:\.[0-9]+)?))");
  static const std::regex exit_line(R"(EVMDK-EXIT ([0-9]+))");
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> names;
  while (std::getline(lines, line)) {
    line.erase(std::remove(line.begin(), line.end(), '\r'), line.end());
    if (line.empty()) continue;
    std::smatch m;
    if (outcome.done) {
      outcome.protocol_errors.push_back("line after EVMDK-DONE: " + line);
    } else if (std::regex_match(line, m, result_line)) {
      if (!names.insert(m[1].str()).second) {
        outcome.protocol_errors.push_back("check reported twice: " + m[1].str());
      }
      outcome.results.push_back({m[1].str(), m[2].str() == "PASS", m[3].str()});
    } else if (std::regex_match(line, m, value_line)) {
      outcome.values[m[1].str()] = std::stod(m[2].str());
    } else if (std::regex_match(line, m, exit_line)) {
      outcome.script_status = std::stoi(m[1].str());
    } else if (line == "EVMDK-DONE") {
      outcome.done = true;
    } else {
      outcome.protocol_errors.push_back("malformed line: " + line);
    }
  }
}

}  // namespace detail

// One guest boot in progress: the constructor prepares the initrd and starts qemu; finish()
// waits for the guest to end (hard timeout, 20 s grace after EVMDK-DONE) and parses the
// outcome. In between, a test can talk to QEMU (GuestConfig::qmp_socket) and wait for lines on
// the guest console, e.g. to hot-plug disks while a scenario waits for them. Never throws for
// a guest-side failure (that is in the outcome); throws HarnessError when the host side cannot
// even set up the boot. The destructor kills a qemu that finish() was never called for.
class GuestRun {
 public:
  GuestRun(const GuestEnvironment& env, const GuestConfig& config, const GuestJob& job)
      : config_(config) {
    if (config.work_dir.empty()) throw HarnessError("GuestConfig.work_dir is not set");
    fs::create_directories(config.work_dir);
    fs::path base = base_initramfs(env);

    // initrd = cached base archive + the job archive appended (the kernel unpacks both).
    job_archive_ = config.work_dir / (config.name + ".job.cpio");
    {
      CpioWriter cpio(job_archive_);
      cpio.directory("job");
      cpio.file("job/scenario.sh", job.scenario, 0755);
      for (const auto& [name, contents] : job.files) cpio.file("job/" + name, contents);
      for (const auto& [name, path] : job.host_files) cpio.file_from("job/" + name, path, 0644);
      if (!config.extra_modules.empty()) {
        // /init loads /job/modules after the base list (dependencies first, as there).
        fs::path scratch = config.work_dir / (config.name + ".modules");
        struct Cleanup {
          fs::path dir;
          ~Cleanup() {
            std::error_code ignored;
            fs::remove_all(dir, ignored);
          }
        } cleanup{scratch};
        fs::create_directories(scratch);
        auto modules = detail::modules_beyond_base(env.modules_dir, config.extra_modules);
        cpio.file("job/modules", detail::pack_modules(cpio, env.modules_dir, modules, scratch));
      }
      cpio.finish();
    }
    initrd_ = config.work_dir / (config.name + ".initrd");
    fs::copy_file(base, initrd_, fs::copy_options::overwrite_existing);
    {
      std::ofstream out(initrd_, std::ios::binary | std::ios::app);
      std::ifstream in(job_archive_, std::ios::binary);
      out << in.rdbuf();
      if (!out.flush()) throw HarnessError("cannot write " + initrd_.string());
    }

    console_ = config.work_dir / (config.name + ".console.log");
    results_ = config.work_dir / (config.name + ".results.log");
    qemu_log_ = config.work_dir / (config.name + ".qemu.log");
    for (const auto& f : {console_, results_, qemu_log_}) {
      std::error_code ignored;
      fs::remove(f, ignored);
    }
    if (!config.qmp_socket.empty()) {
      std::error_code ignored;
      fs::remove(config.qmp_socket, ignored);
    }

    // Without pmem devices this is just the RAM size, as always.
    PmemAttachArgs pmem = pmem_attach_args(config.memory_mib, config.pmem_devices);
    std::vector<std::string> argv{env.qemu.string(), "-nodefaults", "-no-user-config",
                                  "-nographic", "-no-reboot"};
    // Firmware search path: QEMU 10's Debian data package has no bios-256k.bin, SeaBIOS's has.
    for (const auto& dir : env.qemu_datadirs) argv.insert(argv.end(), {"-L", dir.string()});
    if (env.kvm) {
      argv.insert(argv.end(), {"-accel", "kvm", "-cpu", "host"});
    } else {
      argv.insert(argv.end(), {"-accel", "tcg", "-cpu", "max"});
    }
    argv.insert(argv.end(),
                {"-m", pmem.memory, "-smp", "1", "-kernel", env.kernel.string(),
                 "-initrd", initrd_.string(), "-append",
                 "console=ttyS0 rdinit=/init panic=-1 loglevel=4 no_timer_check " + config.extra_kernel_args,
                 "-serial", "file:" + console_.string(), "-serial", "file:" + results_.string()});
    if (!config.qmp_socket.empty()) {
      argv.insert(argv.end(), {"-qmp", "unix:" + config.qmp_socket.string() + ",server=on,wait=off"});
    }
    int index = 0;
    for (const auto& drive : config.drives) {
      std::string id = fmt::format("disk{}", index++);
      argv.push_back("-drive");
      argv.push_back(fmt::format("file={},format={},if=none,id={}{}", detail::qemu_escape(drive.file.string()),
                                 drive.format, id, drive.read_only ? ",readonly=on" : ""));
      argv.push_back("-device");
      argv.push_back(fmt::format("virtio-blk-pci,drive={}{}", id,
                                 drive.serial.empty() ? "" : ",serial=" + drive.serial));
    }
    argv.insert(argv.end(), pmem.args.begin(), pmem.args.end());
    argv.insert(argv.end(), config.extra_qemu_args.begin(), config.extra_qemu_args.end());

    for (const auto& arg : argv) {
      outcome_.command_line += (outcome_.command_line.empty() ? "" : " ") +
                               (arg.find(' ') == std::string::npos ? arg : "'" + arg + "'");
    }
    started_ = std::chrono::steady_clock::now();
    qemu_.emplace(argv, qemu_log_);
  }
  GuestRun(const GuestRun&) = delete;
  GuestRun& operator=(const GuestRun&) = delete;
  ~GuestRun() { remove_temporaries(); }

  // The guest console so far.
  std::string console() const { return read_text(console_); }

  // qemu's process id while it runs (e.g. for /proc/PID/smaps), -1 after finish().
  pid_t qemu_pid() const { return qemu_ ? qemu_->pid() : -1; }

  // Waits until the guest console holds `text` (true), or qemu ended or the run's hard timeout
  // or `limit` passed (false).
  bool wait_for_console(const std::string& text, std::chrono::seconds limit) {
    auto deadline = std::min(std::chrono::steady_clock::now() + limit, started_ + config_.timeout);
    while (std::chrono::steady_clock::now() < deadline) {
      if (console().find(text) != std::string::npos) return true;
      if (!qemu_ || qemu_->poll()) return console().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // Waits for the guest to end and returns what it reported. Call once.
  GuestOutcome finish() {
    if (!qemu_) throw HarnessError("GuestRun::finish called twice");
    std::optional<std::chrono::steady_clock::time_point> done_at;
    while (true) {
      if (auto status = qemu_->poll()) {
        outcome_.qemu_status = *status;
        break;
      }
      auto now = std::chrono::steady_clock::now();
      if (now - started_ > config_.timeout) {
        outcome_.timed_out = true;
        outcome_.qemu_status = qemu_->kill_and_reap();
        break;
      }
      // After EVMDK-DONE the guest powers off; don't wait long for a guest that doesn't.
      if (!done_at && read_text(results_).find("EVMDK-DONE") != std::string::npos) done_at = now;
      if (done_at && now - *done_at > std::chrono::seconds(20)) {
        outcome_.qemu_status = qemu_->kill_and_reap();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    qemu_.reset();
    outcome_.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    outcome_.console = read_text(console_);
    outcome_.qemu_output = read_text(qemu_log_);
    detail::parse_results(read_text(results_), outcome_);
    remove_temporaries();
    return std::move(outcome_);
  }

 private:
  // The initrd copies are large and per run; the logs stay for the test's temp dir.
  void remove_temporaries() {
    qemu_.reset();  // kills a qemu still running
    std::error_code ignored;
    if (!initrd_.empty()) fs::remove(initrd_, ignored);
    if (!job_archive_.empty()) fs::remove(job_archive_, ignored);
  }

  GuestConfig config_;
  fs::path job_archive_, initrd_, console_, results_, qemu_log_;
  std::chrono::steady_clock::time_point started_;
  std::optional<ChildProcess> qemu_;
  GuestOutcome outcome_;
};

// Boots one guest, runs the job and returns what it reported (see GuestRun).
inline GuestOutcome run_guest(const GuestEnvironment& env, const GuestConfig& config,
                              const GuestJob& job) {
  return GuestRun(env, config, job).finish();
}

// Formats and creates a writable ext4 disk image (the container's upper layer).
inline void make_ext4_disk(const fs::path& path, uint64_t size_mib, const fs::path& scratch) {
  {
    std::ofstream create(path, std::ios::binary | std::ios::trunc);
  }
  fs::resize_file(path, size_mib << 20);
  auto mkfs = run_command({"mkfs.ext4", "-q", "-F", path.string()}, scratch);
  if (mkfs.status != 0) throw HarnessError("mkfs.ext4 " + path.string() + " failed: " + mkfs.output);
}

}  // namespace evmdk::qemu
