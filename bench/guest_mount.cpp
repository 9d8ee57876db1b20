// Guest mount/teardown benchmark: `erofs-vmdk guest mount` / `guest teardown` (and the library
// called in-process) against a shell baseline doing the same work with util-linux losetup,
// mount and umount, for 1, 16 and 128 layers on one GPT layer disk (a raw image on a loop
// device). Prints milliseconds (median of the runs) and the ratio shell / erofs-vmdk.
// Needs root, mkfs.erofs, sgdisk, losetup. Usage: bench_guest_mount [erofs-vmdk path] [runs]
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "evmdk/guest/block_device.h"
#include "evmdk/guest/driver.h"
#include "evmdk/storage_spec.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

void sh(const std::string& command) {
  if (std::system(command.c_str()) != 0) {
    throw std::runtime_error("benchmark setup command failed: " + command);
  }
}

std::string sh_output(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  char buffer[256];
  while (std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
  if (::pclose(pipe) != 0) throw std::runtime_error("command failed: " + command);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

double time_ms(const std::function<void()>& work) {
  auto start = Clock::now();
  work();
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Disk {
  std::string image;
  std::string device;  // partition-scanned loop device
  std::vector<uint64_t> offsets, sizes;
};

Disk build_disk(const std::string& dir, size_t layers) {
  Disk disk;
  disk.image = dir + "/disk.img";
  const uint64_t mib = 1 << 20;
  std::string sgdisk = "sgdisk -o";
  if (layers > 124) sgdisk += fmt::format(" --resize-table={}", (layers + 3) / 4 * 4);
  uint64_t sector = 2048;
  std::vector<std::string> images;
  for (size_t i = 0; i < layers; ++i) {
    std::string src = fmt::format("{}/src-{}", dir, i);
    fs::create_directories(src + "/layer");
    std::ofstream(src + "/layer/" + std::to_string(i)) << i << "\n";
    std::ofstream(src + "/which") << i << "\n";
    images.push_back(fmt::format("{}/layer-{}.erofs", dir, i));
    sh(fmt::format("mkfs.erofs -T 0 -U {:08x}-0000-4000-8000-000000000000 {} {} >/dev/null 2>&1",
                   i + 1, images.back(), src));
    uint64_t size = (fs::file_size(images.back()) + mib - 1) / mib * mib;
    sgdisk += fmt::format(" -n{}:{}:{} -u{}:{:08x}-1111-4000-8000-000000000000", i + 1, sector,
                          sector + size / 512 - 1, i + 1, i + 1);
    disk.offsets.push_back(sector * 512);
    disk.sizes.push_back(size);
    sector += size / 512;
  }
  {
    std::ofstream create(disk.image);
  }
  fs::resize_file(disk.image, sector * 512 + mib);
  sh(sgdisk + " " + disk.image + " >/dev/null");
  for (size_t i = 0; i < layers; ++i) {
    sh(fmt::format("dd if={} of={} bs=512 seek={} conv=notrunc status=none", images[i], disk.image,
                   disk.offsets[i] / 512));
  }
  disk.device = sh_output("losetup --show -fP " + disk.image);
  return disk;
}

std::vector<evmdk::Storage> storages_for(const Disk& disk) {
  std::vector<evmdk::Storage> out;
  for (size_t i = 0; i < disk.offsets.size(); ++i) {
    evmdk::Storage lower;
    lower.driver = "blk";
    lower.source = disk.device;
    lower.fstype = "erofs";
    lower.options = {"ro", "X-kata.overlay-lower", "X-kata.gpt-partitioned=true",
                     fmt::format("X-kata.partition-number={}", i + 1),
                     fmt::format("X-erofs-vmdk.layer-index={}", i),
                     fmt::format("X-erofs-vmdk.partuuid={:08x}-1111-4000-8000-000000000000", i + 1),
                     fmt::format("X-erofs-vmdk.erofs-uuid={:08x}-0000-4000-8000-000000000000", i + 1)};
    out.push_back(lower);
  }
  return out;
}

// The same work by hand: a read-only loop (partition node when the kernel exposes partitions,
// else an offset/sizelimit slice, as the driver does), EROFS mounts, a tmpfs upper, the
// overlay with relative lowerdirs, then teardown in order.
std::pair<std::string, std::string> shell_scripts(const Disk& disk, const std::string& base,
                                                  const std::string& rootfs, bool partitions) {
  std::string layer_dir = base + "/shell/multi-layer";
  std::string mount = fmt::format("set -e\nmkdir -p {0}/upper {1}\nmount -t tmpfs -o mode=0755 tmpfs {0}/upper\n"
                                  "mkdir {0}/upper/upper {0}/upper/work\n", layer_dir, rootfs);
  std::string umount_lowers, lowerdir;
  for (size_t i = 0; i < disk.offsets.size(); ++i) {
    std::string device = fmt::format("{}p{}", disk.device, i + 1);
    if (!partitions) {
      mount += fmt::format("dev{}=$(losetup -r --show -f -o {} --sizelimit {} {})\n", i,
                           disk.offsets[i], disk.sizes[i], disk.device);
      device = fmt::format("$dev{}", i);
    }
    mount += fmt::format("mkdir {0}/lower-{1}\nmount -t erofs -o ro,nodev,nosuid {2} {0}/lower-{1}\n",
                         layer_dir, i, device);
    lowerdir += fmt::format("{}lower-{}", i ? ":" : "", i);
  }
  mount += fmt::format("cd {} && mount -t overlay -o upperdir=upper/upper,workdir=upper/work,lowerdir={} overlay {}\n",
                       layer_dir, lowerdir, rootfs);
  std::string teardown = fmt::format("set -e\numount {}\numount {}/upper\n", rootfs, layer_dir);
  for (size_t i = disk.offsets.size(); i-- > 0;) {
    teardown += fmt::format("dev=$(findmnt -n -o SOURCE {0}/lower-{1})\numount {0}/lower-{1}\n", layer_dir, i);
    if (!partitions) teardown += "losetup -d $dev\n";
    teardown += fmt::format("rmdir {}/lower-{}\n", layer_dir, i);
  }
  teardown += fmt::format("rmdir {0}/upper {0} {1}/shell {2}\n", layer_dir, base, rootfs);
  return {mount, teardown};
}

}  // namespace

int main(int argc, char** argv) {
  std::string cli = argc > 1 ? argv[1] : "build/tools/erofs-vmdk";
  int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  if (::geteuid() != 0) {
    fmt::print(stderr, "bench_guest_mount needs root (loop devices, mounts)\n");
    return 2;
  }
  cli = fs::absolute(cli).string();
  fmt::print("guest mount/teardown, median of {} runs, ms (ratio = shell / erofs-vmdk; >1 means faster)\n", runs);
  fmt::print("{:>6} | {:>9} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>9} {:>6}\n", "layers", "cli-mount",
             "api-mount", "sh-mount", "ratio", "cli-tear", "api-tear", "sh-tear", "ratio");
  for (size_t layers : {size_t{1}, size_t{16}, size_t{128}}) {
    char pattern[] = "/tmp/evmdk-bench-XXXXXX";
    std::string dir = ::mkdtemp(pattern);
    // Like /run in a guest, the work directory is a tmpfs (journal fsyncs cost nothing there).
    sh(fmt::format("mount -t tmpfs tmpfs {}", dir));
    Disk disk = build_disk(dir, layers);
    // The kernel here may not parse GPT (no CONFIG_EFI_PARTITION); then both sides use slices.
    bool partitions = !evmdk::guest::wait_for_partition(disk.device, 1, std::chrono::milliseconds(2000)).empty();
    std::string storages_path = dir + "/storage.json";
    std::ofstream(storages_path) << evmdk::to_json(storages_for(disk)).dump();
    std::string base = dir + "/base", rootfs = dir + "/rootfs";
    std::vector<double> cli_mount, cli_tear, api_mount, api_tear, sh_mount, sh_tear;
    for (int run = 0; run < runs; ++run) {
      cli_mount.push_back(time_ms([&] {
        sh(fmt::format("{} guest mount -s {} -i c -r {} -b {} >/dev/null", cli, storages_path, rootfs, base));
      }));
      cli_tear.push_back(time_ms([&] { sh(fmt::format("{} guest teardown -i c -b {} >/dev/null", cli, base)); }));
      evmdk::guest::MountRequest request;
      request.storages = storages_for(disk);
      request.container_id = "c";
      request.rootfs = rootfs;
      request.base_dir = base;
      api_mount.push_back(time_ms([&] { evmdk::guest::mount_rootfs(request); }));
      evmdk::guest::TeardownRequest teardown;
      teardown.container_id = "c";
      teardown.base_dir = base;
      api_tear.push_back(time_ms([&] {
        if (!evmdk::guest::teardown_rootfs(teardown).clean()) throw std::runtime_error("teardown not clean");
      }));
      auto [mount_script, teardown_script] = shell_scripts(disk, base, rootfs, partitions);
      std::ofstream(dir + "/mount.sh") << mount_script;
      std::ofstream(dir + "/teardown.sh") << teardown_script;
      sh_mount.push_back(time_ms([&] { sh("sh " + dir + "/mount.sh"); }));
      sh_tear.push_back(time_ms([&] { sh("sh " + dir + "/teardown.sh"); }));
    }
    double cm = median(cli_mount), am = median(api_mount), sm = median(sh_mount);
    double ct = median(cli_tear), at = median(api_tear), st = median(sh_tear);
    fmt::print("{:>6} | {:>9.1f} {:>9.1f} {:>9.1f} {:>6.2f} | {:>9.1f} {:>9.1f} {:>9.1f} {:>6.2f}\n", layers,
               cm, am, sm, sm / cm, ct, at, st, st / ct);
    std::fflush(stdout);
    sh("losetup -d " + disk.device);
    sh(fmt::format("umount {} && rmdir {}", dir, dir));
  }
  return 0;
}
