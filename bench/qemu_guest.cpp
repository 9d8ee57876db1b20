// Guest-side figures under QEMU (TCG unless EVMDK_QEMU_KVM=1), using the test harness:
//  1. time from kernel start to rootfs ready (`erofs-vmdk guest mount` returned) for 3 and 128
//     layers on one GPT VMDK, next to the time the same boot needs to reach the scenario
//     (modules loaded) — the floor;
//  2. read throughput of large files through the merged VMDK disk against the same layer
//     attached as a raw disk, single stream and 4 parallel streams, as a ratio. QEMU's vmdk
//     driver serializes all I/O on a disk; this shows what that costs here.
// Usage: bench_qemu_guest [ready|read]   (default: both)
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../tests/qemu/harness/qemu_harness.h"
#include "evmdk/host/compose/compose.h"

namespace fs = std::filesystem;
using namespace evmdk::qemu;

namespace {

struct Workspace {
  fs::path dir;
  Workspace() {
    std::string pattern = (fs::temp_directory_path() / "evmdk-bench-qemu-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw HarnessError("mkdtemp failed");
    dir = pattern;
  }
  ~Workspace() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
};

void mkfs_erofs(const fs::path& tree, const fs::path& image, const fs::path& scratch) {
  auto r = run_command({"mkfs.erofs", "--quiet", "-T", "0", image.string(), tree.string()}, scratch);
  if (r.status != 0) throw HarnessError("mkfs.erofs " + image.string() + ": " + r.output);
}

std::vector<std::string> drive_args(const fs::path& out) {
  auto qemu = nlohmann::json::parse(read_text(out / "qemu.json"));
  std::vector<std::string> args;
  for (const auto& a : qemu.at("drive_args")) args.push_back(a.get<std::string>());
  return args;
}

fs::path compose_gpt(const std::vector<std::string>& layers, const fs::path& out) {
  evmdk::host::ComposeOptions options;
  options.mode = evmdk::host::ComposeMode::Gpt;
  options.output_dir = out.string();
  for (const auto& l : layers) options.layers.push_back({l, {}});
  evmdk::host::compose(options);
  return out;
}

void require_passed(const GuestOutcome& outcome, const std::vector<std::string>& expected) {
  if (!outcome.problems(expected).empty()) {
    std::fputs(outcome.report(expected).c_str(), stderr);
    throw HarnessError("guest run failed (report above)");
  }
}

void bench_ready(const GuestEnvironment& env, const fs::path& work) {
  fmt::print("== kernel start -> rootfs ready (guest seconds, from /proc/uptime)\n");
  fmt::print("{:>7} {:>14} {:>14} {:>12}   driver steps (ms): lowers upper mkdir rootfs\n",
             "layers", "modules-ready", "rootfs-ready", "mount-only");
  for (int count : {3, 128}) {
    fs::path dir = work / fmt::format("ready-{}", count);
    fs::create_directories(dir);
    std::vector<std::string> layers;
    for (int i = 0; i < count; ++i) {
      fs::path tree = dir / fmt::format("tree-{}", i);
      fs::create_directories(tree / "layers");
      write_text(tree / "layers" / fmt::format("layer-{}", i), std::to_string(i));
      fs::path image = dir / fmt::format("layer-{}.erofs", i);
      mkfs_erofs(tree, image, dir);
      layers.push_back(image.string());
    }
    fs::path out = compose_gpt(layers, dir / "disk");
    auto storages = nlohmann::json::parse(read_text(out / "storage.json"));
    storages.push_back({{"driver", "blk"}, {"source", "serial:evmdk-upper"}, {"fstype", "ext4"},
                        {"options", {"rw", "X-kata.multi-layer=true", "X-kata.overlay-upper"}},
                        {"mount_point", "upper"}});
    make_ext4_disk(dir / "upper.img", 32, dir);
    GuestConfig cfg;
    cfg.name = "ready";
    cfg.work_dir = dir;
    cfg.extra_qemu_args = drive_args(out);
    cfg.drives = {{dir / "upper.img", "raw", false, "evmdk-upper"}};
    cfg.timeout = std::chrono::seconds(600);
    GuestJob job;
    job.files["storage.json"] = storages.dump();
    job.scenario = R"SH(
evmdk_value modules-ready "$(evmdk_uptime)"
evmdk_check mount sh -c 'erofs-vmdk guest mount --storages /job/storage.json --id bench --rootfs /run/bench/rootfs > /tmp/mount.json' || exit 1
evmdk_value rootfs-ready "$(evmdk_uptime)"
# The driver's own split of that time (milliseconds per step).
for step in dirs lowers upper mkdir rootfs; do
  evmdk_value "step-$step" "$(sed -n "s/^ *\"$step\": \([0-9][0-9.]*\),*$/\1/p" /tmp/mount.json)"
done
evmdk_check teardown erofs-vmdk guest teardown --id bench --rootfs /run/bench/rootfs
)SH";
    auto outcome = run_guest(env, cfg, job);
    require_passed(outcome, {"mount", "teardown"});
    double modules = outcome.values["modules-ready"], ready = outcome.values["rootfs-ready"];
    fmt::print("{:>7} {:>14.2f} {:>14.2f} {:>12.2f}   {:>6.0f} {:>5.0f} {:>5.0f} {:>6.0f}\n", count,
               modules, ready, ready - modules, outcome.values["step-lowers"],
               outcome.values["step-upper"], outcome.values["step-mkdir"],
               outcome.values["step-rootfs"]);
  }
}

void bench_read(const GuestEnvironment& env, const fs::path& work) {
  constexpr int kFiles = 4, kFileMib = 48;
  fs::path dir = work / "read";
  fs::create_directories(dir / "big");
  for (int i = 0; i < kFiles; ++i) {
    auto r = run_command({"dd", "if=/dev/urandom", "of=" + (dir / "big" / fmt::format("f{}", i)).string(),
                          "bs=1M", fmt::format("count={}", kFileMib), "status=none"}, dir);
    if (r.status != 0) throw HarnessError("dd: " + r.output);
  }
  fs::create_directories(dir / "small");
  write_text(dir / "small" / "x", "x");
  mkfs_erofs(dir / "big", dir / "big.erofs", dir);
  mkfs_erofs(dir / "small", dir / "small.erofs", dir);
  // The big layer is partition 1 (top) of a two-layer GPT VMDK, and also a raw disk.
  fs::path out = compose_gpt({(dir / "big.erofs").string(), (dir / "small.erofs").string()}, dir / "disk");
  GuestConfig cfg;
  cfg.name = "read";
  cfg.work_dir = dir;
  cfg.extra_qemu_args = drive_args(out);
  cfg.drives = {{dir / "big.erofs", "raw", true, "evmdk-raw-layer"}};
  cfg.timeout = std::chrono::seconds(900);
  auto serial = nlohmann::json::parse(read_text(out / "qemu.json")).at("serial").get<std::string>();
  GuestJob job;
  job.scenario = fmt::format("VMDK_SERIAL={}\nFILES={}\n", serial, kFiles) + R"SH(
vmdk=$(evmdk_wait_serial "$VMDK_SERIAL"); raw=$(evmdk_wait_serial evmdk-raw-layer)
for i in $(seq 50); do [ -b ${vmdk}1 ] && break; usleep 100000; done
mkdir -p /mnt/vmdk /mnt/raw
evmdk_check mount-vmdk mount -t erofs -o ro ${vmdk}1 /mnt/vmdk
evmdk_check mount-raw mount -t erofs -o ro $raw /mnt/raw
timed() {  # NAME CMD...: elapsed guest seconds as a value
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(evmdk_uptime); "$2" "$3"; t1=$(evmdk_uptime)
  evmdk_value "$1" "$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')"
}
one() { dd if=$1/f0 of=/dev/null bs=1M 2>/dev/null; }
parallel() { for i in $(seq 0 $((FILES - 1))); do dd if=$1/f$i of=/dev/null bs=1M 2>/dev/null & done; wait; }
for round in 1 2; do
  timed raw-single-$round one /mnt/raw
  timed vmdk-single-$round one /mnt/vmdk
  timed raw-parallel-$round parallel /mnt/raw
  timed vmdk-parallel-$round parallel /mnt/vmdk
done
umount /mnt/vmdk /mnt/raw
)SH";
  auto outcome = run_guest(env, cfg, job);
  require_passed(outcome, {"mount-vmdk", "mount-raw"});
  fmt::print("== guest read throughput: merged VMDK partition vs the same layer as a raw disk\n");
  fmt::print("{:>22} {:>10} {:>10} {:>12}\n", "", "raw MB/s", "vmdk MB/s", "vmdk/raw");
  for (const char* kind : {"single", "parallel"}) {
    double raw = 0, vmdk = 0;  // best of two rounds
    for (int round = 1; round <= 2; ++round) {
      double r = outcome.values[fmt::format("raw-{}-{}", kind, round)];
      double v = outcome.values[fmt::format("vmdk-{}-{}", kind, round)];
      if (r > 0 && (raw == 0 || r < raw)) raw = r;
      if (v > 0 && (vmdk == 0 || v < vmdk)) vmdk = v;
    }
    double mib = std::string(kind) == "single" ? kFileMib : kFileMib * kFiles;
    if (raw <= 0 || vmdk <= 0) {
      fmt::print("{:>22} timings below /proc/uptime resolution\n", kind);
      continue;
    }
    fmt::print("{:>22} {:>10.1f} {:>10.1f} {:>12.2f}\n",
               fmt::format("{} ({} MiB)", kind, static_cast<int>(mib)), mib / raw, mib / vmdk,
               (mib / vmdk) / (mib / raw));
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string what = argc > 1 ? argv[1] : "all";
    // build/bench/bench_qemu_guest -> build/tools/erofs-vmdk
    fs::path cli = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools" / "erofs-vmdk";
    auto env = GuestEnvironment::detect(cli);
    Workspace work;
    fmt::print("accelerator: {}\n", env.kvm ? "kvm" : "tcg");
    if (what == "all" || what == "ready") bench_ready(env, work.dir);
    if (what == "all" || what == "read") bench_read(env, work.dir);
    return 0;
  } catch (const std::exception& error) {
    fmt::print(stderr, "bench_qemu_guest: {}\n", error.what());
    return 1;
  }
}
