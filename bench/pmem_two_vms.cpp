// Two VMs from one image (issue 18): what the host pays for the second VM reading the same data,
// with the layer disk attached as virtio-pmem + EROFS dax=always versus as virtio-blk.
//
// One 200 MiB file in one EROFS layer (mkfs.erofs -Enoinline_data), composed into a GPT disk by
// `erofs-vmdk compose`, made raw, padded to 2 MiB with the backup GPT at the end
// (tests/qemu/harness/pmem_disk.h). Per mode: the image is evicted from the host page cache;
// VM 1 boots, mounts the layer and reads the file; then VM 2 does the same while VM 1 still
// runs. The host tells each guest when to read and when to finish by hot-plugging a small
// marker disk over QMP, so every figure is taken while the guests sit still.
//
// Figures, at "ready" (booted, mounted, guest caches dropped) and "read" for each VM:
//   - footprint: sum of both qemus' Pss (smaps_rollup) + the image's host page cache that no
//     qemu maps (mincore of the image minus the largest Rss of its mapping in a qemu). It
//     counts each shared page once and ignores the rest of the host, so it is not disturbed
//     by whatever else runs there;
//   - host MemAvailable (reported as well; other processes on the host move it);
//   - each qemu's Rss and Pss of the image mapping (/proc/PID/smaps, the mem-path mapping);
//   - guest Cached growth while reading (from the guest's /proc/meminfo).
// "Second VM adds" is the footprint growth while VM 2 reads, over the bytes it reads. Target:
// under 10% with pmem+DAX.
// Usage: bench_pmem_two_vms   (as root; TCG unless EVMDK_QEMU_KVM=1; the lane variables of
// the QEMU harness pick QEMU and kernel, see docs/testing.md)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../tests/qemu/harness/pmem_disk.h"
#include "../tests/qemu/harness/qemu_harness.h"
#include "../tests/qemu/harness/qmp.h"

namespace fs = std::filesystem;
using namespace evmdk::qemu;

namespace {

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kFileBytes = 200 * kMiB;

struct Workspace {
  fs::path dir;
  Workspace() {
    std::string pattern = (fs::temp_directory_path() / "evmdk-bench-pmem-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw HarnessError("mkdtemp failed");
    dir = pattern;
  }
  ~Workspace() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
};

void run_or_throw(const std::vector<std::string>& argv, const fs::path& scratch) {
  auto r = run_command(argv, scratch);
  if (r.status != 0) throw HarnessError(argv[0] + " failed: " + r.output);
}

// kB value of a "Name:   N kB" line in a /proc file.
uint64_t proc_kib(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + ":", 0) == 0) return std::stoull(line.substr(name.size() + 1));
  }
  throw HarnessError("no " + name + " in a /proc file");
}

uint64_t mem_available_bytes() {
  return proc_kib(read_text("/proc/meminfo"), "MemAvailable") * 1024;
}

struct MappingUse {
  uint64_t rss = 0, pss = 0;
};

struct ProcessUse {
  uint64_t pss = 0, anonymous = 0;  // smaps_rollup: all of qemu, and its anonymous part
};
ProcessUse process_use(pid_t pid) {
  std::string rollup = read_text(fmt::format("/proc/{}/smaps_rollup", pid));
  return {proc_kib(rollup, "Pss") * 1024, proc_kib(rollup, "Anonymous") * 1024};
}
// Rss and Pss of every mapping of `file` in the process (the memory-backend-file).
MappingUse mapping_use(pid_t pid, const fs::path& file) {
  std::istringstream lines(read_text(fmt::format("/proc/{}/smaps", pid)));
  std::string line;
  bool inside = false;
  MappingUse use;
  while (std::getline(lines, line)) {
    bool header = !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
                  line.find('-') < line.find(' ');
    if (header) {
      inside =
          line.size() >= file.string().size() &&
          line.compare(line.size() - file.string().size(), std::string::npos, file.string()) == 0;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      use.rss += std::stoull(line.substr(4)) * 1024;
    } else if (inside && line.rfind("Pss:", 0) == 0) {
      use.pss += std::stoull(line.substr(4)) * 1024;
    }
  }
  return use;
}

// Bytes of the file in the host page cache (mincore over a mapping that faults nothing in).
uint64_t resident_bytes(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw HarnessError("cannot open " + file.string());
  uint64_t size = fs::file_size(file);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw HarnessError("cannot mmap " + file.string());
  long page = ::sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> pages((size + page - 1) / page);
  int rc = ::mincore(map, size, pages.data());
  ::munmap(map, size);
  if (rc != 0) throw HarnessError("mincore " + file.string() + " failed");
  uint64_t resident = 0;
  for (unsigned char p : pages) resident += (p & 1) ? page : 0;
  return resident;
}

void evict(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw HarnessError("cannot open " + file.string());
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

struct Snapshot {
  uint64_t mem_available = 0, footprint = 0, image_cached = 0;
  std::vector<MappingUse> image_use;  // per running VM
  std::vector<ProcessUse> qemu_use;   // per running VM
};

Snapshot snapshot(const std::vector<pid_t>& qemus, const fs::path& image) {
  Snapshot s;
  s.mem_available = mem_available_bytes();
  s.image_cached = resident_bytes(image);
  uint64_t pss = 0, mapped = 0;
  for (pid_t pid : qemus) {
    s.qemu_use.push_back(process_use(pid));
    pss += s.qemu_use.back().pss;
    s.image_use.push_back(mapping_use(pid, image));
    mapped = std::max(mapped, s.image_use.back().rss);
  }
  s.footprint = pss + (s.image_cached > mapped ? s.image_cached - mapped : 0);
  return s;
}

// One VM of the benchmark: boots, mounts and waits; read() and finish() are markers over QMP.
class BenchVm {
 public:
  BenchVm(const GuestEnvironment& env, const fs::path& work, const std::string& name, bool pmem,
          const fs::path& image)
      : work_(work), name_(name) {
    GuestConfig cfg;
    cfg.name = name;
    cfg.work_dir = work;
    cfg.memory_mib = 512;
    cfg.timeout = std::chrono::seconds(900);
    cfg.qmp_socket = work / (name + ".qmp");
    if (pmem) {
      cfg.extra_modules = pmem_module_names();
      cfg.pmem_devices = {{image, 0, ""}};
    } else {
      cfg.drives = {{image, "raw", true, "evmdk-bench-blk"}};
    }
    GuestJob job;
    job.scenario = std::string(pmem ? R"SH(
evmdk_check device evmdk_wait_path /dev/pmem0p1 30
evmdk_check mount mount -t erofs -o ro,dax=always /dev/pmem0p1 /mnt
evmdk_check dax sh -c "grep ' /mnt ' /proc/self/mountinfo | grep -q dax=always"
)SH"
                                    : R"SH(
blk=$(evmdk_wait_serial evmdk-bench-blk) && blk=${blk##*/}
evmdk_check device evmdk_wait_path /dev/${blk}1 30
evmdk_check mount mount -t erofs -o ro /dev/${blk}1 /mnt
evmdk_result dax PASS not asked for
)SH") + R"SH(
cached_kib() { sed -n 's/^Cached: *\([0-9]*\) kB$/\1/p' /proc/meminfo; }
sync; echo 3 > /proc/sys/vm/drop_caches
echo "EVMDK-BENCH-READY"
evmdk_wait_serial evmdk-bench-read 900 >/dev/null
before=$(cached_kib)
evmdk_check read dd if=/mnt/big.bin of=/dev/null bs=1M
after=$(cached_kib)
evmdk_value guest-cached-kib $((after - before))
echo "EVMDK-BENCH-READ-DONE"
evmdk_wait_serial evmdk-bench-finish 900 >/dev/null
evmdk_check unmount umount /mnt
)SH";
    marker_ = work / (name + ".marker.img");
    write_text(marker_, std::string(kMiB, '\0'));
    run_.emplace(env, cfg, job);
    socket_ = cfg.qmp_socket;
  }

  pid_t pid() const { return run_->qemu_pid(); }

  void wait_for(const std::string& marker) {
    if (!run_->wait_for_console(marker, std::chrono::seconds(600))) {
      throw HarnessError(name_ + " never printed " + marker + ":\n" + run_->console());
    }
  }

  void signal(const std::string& what) {
    if (!qmp_) qmp_.emplace(socket_);
    std::string node = name_ + "-" + what;
    qmp_->execute_ok("blockdev-add",
                     {{"driver", "raw"},
                      {"node-name", node},
                      {"read-only", true},
                      {"file", {{"driver", "file"}, {"filename", marker_.string()}}}});
    qmp_->execute_ok("device_add", {{"driver", "virtio-blk-pci"},
                                    {"drive", node},
                                    {"id", node},
                                    {"serial", "evmdk-bench-" + what}});
  }

  GuestOutcome finish() {
    auto outcome = run_->finish();
    auto problems = outcome.problems({"device", "mount", "dax", "read", "unmount"});
    if (!problems.empty()) {
      std::fputs(outcome.report({"device", "mount", "dax", "read", "unmount"}).c_str(), stderr);
      throw HarnessError(name_ + " failed (report above)");
    }
    return outcome;
  }

 private:
  fs::path work_, marker_, socket_;
  std::string name_;
  std::optional<GuestRun> run_;
  std::optional<QmpClient> qmp_;
};

struct ModeResult {
  std::string mode;
  Snapshot before, ready1, read1, ready2, read2;
  double guest_cached1 = 0, guest_cached2 = 0;  // KiB
};

ModeResult run_mode(const GuestEnvironment& env, const fs::path& work, const fs::path& image,
                    bool pmem) {
  ModeResult r;
  r.mode = pmem ? "pmem+DAX" : "virtio-blk";
  evict(image);
  r.before = snapshot({}, image);
  std::string prefix = pmem ? "pmem" : "blk";
  BenchVm vm1(env, work, prefix + "-vm1", pmem, image);
  std::optional<BenchVm> vm2;
  try {
    vm1.wait_for("EVMDK-BENCH-READY");
    r.ready1 = snapshot({vm1.pid()}, image);
    vm1.signal("read");
    vm1.wait_for("EVMDK-BENCH-READ-DONE");
    r.read1 = snapshot({vm1.pid()}, image);
    vm2.emplace(env, work, prefix + "-vm2", pmem, image);
    vm2->wait_for("EVMDK-BENCH-READY");
    r.ready2 = snapshot({vm1.pid(), vm2->pid()}, image);
    vm2->signal("read");
    vm2->wait_for("EVMDK-BENCH-READ-DONE");
    r.read2 = snapshot({vm1.pid(), vm2->pid()}, image);
    vm1.signal("finish");
    vm2->signal("finish");
  } catch (const HarnessError& error) {
    std::fputs(error.what(), stderr);
    throw;
  }
  r.guest_cached1 = vm1.finish().values["guest-cached-kib"];
  r.guest_cached2 = vm2->finish().values["guest-cached-kib"];
  return r;
}

double mib(double bytes) { return bytes / kMiB; }
double drop(uint64_t from, uint64_t to) {
  return mib(static_cast<double>(from) - static_cast<double>(to));
}
double grow(uint64_t from, uint64_t to) {
  return mib(static_cast<double>(to) - static_cast<double>(from));
}

void print_mode(const ModeResult& r) {
  fmt::print("== {}\n", r.mode);
  fmt::print("  {:<34} {:>10} {:>10} {:>10} {:>10}\n", "", "VM1 ready", "VM1 read", "VM2 ready",
             "VM2 read");
  fmt::print("  {:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}\n", "footprint (MiB)",
             mib(r.ready1.footprint), mib(r.read1.footprint), mib(r.ready2.footprint),
             mib(r.read2.footprint));
  fmt::print("  {:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}\n", "host MemAvailable drop (MiB)",
             drop(r.before.mem_available, r.ready1.mem_available),
             drop(r.before.mem_available, r.read1.mem_available),
             drop(r.before.mem_available, r.ready2.mem_available),
             drop(r.before.mem_available, r.read2.mem_available));
  fmt::print("  {:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}\n", "image in host page cache (MiB)",
             mib(r.ready1.image_cached), mib(r.read1.image_cached), mib(r.ready2.image_cached),
             mib(r.read2.image_cached));
  auto use = [](const Snapshot& s, size_t vm, bool pss) {
    return vm < s.image_use.size() ? mib(pss ? s.image_use[vm].pss : s.image_use[vm].rss) : 0.0;
  };
  for (size_t vm = 0; vm < 2; ++vm) {
    for (bool pss : {false, true}) {
      fmt::print("  {:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}\n",
                 fmt::format("qemu VM{} image {} (MiB)", vm + 1, pss ? "Pss" : "Rss"),
                 use(r.ready1, vm, pss), use(r.read1, vm, pss), use(r.ready2, vm, pss),
                 use(r.read2, vm, pss));
    }
  }
  auto whole = [](const Snapshot& s, size_t vm, bool anonymous) {
    return vm < s.qemu_use.size() ? mib(anonymous ? s.qemu_use[vm].anonymous : s.qemu_use[vm].pss)
                                  : 0.0;
  };
  for (size_t vm = 0; vm < 2; ++vm) {
    for (bool anonymous : {false, true}) {
      fmt::print("  {:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}\n",
                 fmt::format("qemu VM{} {} (MiB)", vm + 1, anonymous ? "Anonymous" : "Pss, all"),
                 whole(r.ready1, vm, anonymous), whole(r.read1, vm, anonymous),
                 whole(r.ready2, vm, anonymous), whole(r.read2, vm, anonymous));
    }
  }
  fmt::print("  guest Cached growth while reading: VM1 {:.1f} MiB, VM2 {:.1f} MiB\n",
             r.guest_cached1 / 1024, r.guest_cached2 / 1024);
  fmt::print(
      "  VM1 read adds {:.1f} MiB, VM2 read adds {:.1f} MiB ({:.1f}% of the {:.0f} MiB it reads); "
      "MemAvailable change over VM2's read: {:+.1f} MiB\n",
      grow(r.ready1.footprint, r.read1.footprint), grow(r.ready2.footprint, r.read2.footprint),
      100.0 * grow(r.ready2.footprint, r.read2.footprint) / mib(kFileBytes), mib(kFileBytes),
      grow(r.ready2.mem_available, r.read2.mem_available));
}

}  // namespace

int main() {
  try {
    fs::path cli =
        fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools" / "erofs-vmdk";
    auto env = GuestEnvironment::detect(cli);
    Workspace work;
    fmt::print("accelerator: {}, kernel {}, qemu {}\n", env.kvm ? "kvm" : "tcg", env.kernel_version,
               env.qemu.string());
    write_noise_file(work.dir / "tree/big.bin", kFileBytes, 0);
    run_or_throw({"mkfs.erofs", "--quiet", "-T", "0", "-Enoinline_data",
                  (work.dir / "layer.erofs").string(), (work.dir / "tree").string()},
                 work.dir);
    run_or_throw({cli.string(), "compose", "--mode", "gpt", "-q", "-o",
                  (work.dir / "disk").string(), (work.dir / "layer.erofs").string()},
                 work.dir);
    auto disk = make_pmem_raw_disk(work.dir / "disk/disk.vmdk", work.dir / "disk.img", work.dir);
    fmt::print("image: {} bytes raw, {} padded to 2 MiB; each VM reads {} MiB once\n",
               disk.unpadded_size, disk.size, kFileBytes / kMiB);
    auto pmem = run_mode(env, work.dir, disk.image, true);
    print_mode(pmem);
    auto blk = run_mode(env, work.dir, disk.image, false);
    print_mode(blk);

    double pmem_second = grow(pmem.ready2.footprint, pmem.read2.footprint);
    double blk_second = grow(blk.ready2.footprint, blk.read2.footprint);
    double pmem_total = grow(pmem.ready1.footprint, pmem.read2.footprint) -
                        grow(pmem.read1.footprint, pmem.ready2.footprint);
    double blk_total = grow(blk.ready1.footprint, blk.read2.footprint) -
                       grow(blk.read1.footprint, blk.ready2.footprint);
    fmt::print("== ratios (virtio-blk / pmem+DAX)\n");
    fmt::print(
        "  data cost of two VMs' reads (footprint, VM boot excluded): {:.1f} / {:.1f} MiB = "
        "{:.1f}x\n",
        blk_total, pmem_total, blk_total / std::max(pmem_total, 0.1));
    fmt::print("  second VM's read: {:.1f} / {:.1f} MiB = {:.1f}x\n", blk_second, pmem_second,
               blk_second / std::max(pmem_second, 0.1));
    fmt::print("  host MemAvailable drop, both VMs read: {:.1f} / {:.1f} MiB = {:.2f}x\n",
               drop(blk.before.mem_available, blk.read2.mem_available),
               drop(pmem.before.mem_available, pmem.read2.mem_available),
               drop(blk.before.mem_available, blk.read2.mem_available) /
                   std::max(drop(pmem.before.mem_available, pmem.read2.mem_available), 0.1));
    fmt::print("  guest Cached growth per VM: {:.1f} / {:.1f} MiB\n", blk.guest_cached2 / 1024,
               pmem.guest_cached2 / 1024);
    bool met = pmem_second < 0.10 * mib(kFileBytes);
    fmt::print("target (pmem+DAX: the second VM adds < 10% of the {} MiB it reads): {} ({:.1f}%)\n",
               kFileBytes / kMiB, met ? "met" : "NOT met", 100.0 * pmem_second / mib(kFileBytes));
    return met ? 0 : 2;
  } catch (const std::exception& error) {
    fmt::print(stderr, "bench_pmem_two_vms: {}\n", error.what());
    return 1;
  }
}
