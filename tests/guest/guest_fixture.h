#pragma once
// Builds real test disks for the guest driver: EROFS layers from directory trees (mkfs.erofs),
// a GPT raw image with one partition per layer (sgdisk, PARTUUIDs set), attached with
// `losetup -P`, and an ext4 upper image. Everything is released on destruction.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "evmdk/guest/cgroup.h"
#include "evmdk/guest/driver.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/mountinfo.h"
#include "evmdk/guest/verity.h"
#include "evmdk/storage_spec.h"
#include "test_support.h"

namespace evmdk::test {

inline std::string must(const CommandResult& result, const std::string& what) {
  if (result.exit_code != 0) throw std::runtime_error(what + " failed: " + result.out + result.err);
  return result.out;
}

inline std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Deterministic UUIDs: layer i of a test gets ...-0000000000ii style values.
inline std::string test_uuid(unsigned kind, unsigned i) {
  return fmt::format("{:08x}-1111-4222-8333-{:012x}", kind, i + 1);
}

// A loop device attached by util-linux for the test's own disks (not the code under test).
class AttachedImage {
 public:
  AttachedImage(const std::string& image, bool partitions, bool read_only = false) {
    std::vector<std::string> argv{"losetup", "--show", "-f"};
    if (partitions) argv.push_back("-P");
    if (read_only) argv.push_back("--read-only");
    argv.push_back(image);
    device_ = trim(must(run(argv), "losetup " + image));
  }
  ~AttachedImage() {
    if (!device_.empty()) run({"losetup", "-d", device_});
  }
  AttachedImage(const AttachedImage&) = delete;
  AttachedImage& operator=(const AttachedImage&) = delete;
  const std::string& device() const { return device_; }

 private:
  std::string device_;
};

struct LayerSpec {
  std::map<std::string, std::string> files;  // as make_tree
  std::vector<std::string> whiteouts;        // paths to hide (char device 0/0)
  std::vector<std::string> opaque_dirs;      // trusted.overlay.opaque=y
};

inline void build_layer_dir(const std::string& dir, const LayerSpec& spec) {
  make_tree(dir, spec.files);
  std::filesystem::create_directories(dir);
  for (const auto& path : spec.whiteouts) {
    std::string full = dir + "/" + path;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    if (::mknod(full.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) {
      throw std::runtime_error("mknod " + full + " failed");
    }
  }
  for (const auto& path : spec.opaque_dirs) {
    std::string full = dir + "/" + path;
    std::filesystem::create_directories(full);
    must(run({"setfattr", "-n", "trusted.overlay.opaque", "-v", "y", full}), "setfattr");
  }
}

// GPT raw image: layer i (0 = top) in partition i+1, 1 MiB aligned, PARTUUID test_uuid(2, i).
class GptLayerDisk {
 public:
  // `prepare` may change each layer image before it goes onto the disk (e.g. append a
  // dm-verity tree).
  GptLayerDisk(const TempDir& temp, const std::vector<LayerSpec>& layers,
               const std::function<void(size_t, const std::string&)>& prepare = {}) {
    image_ = temp / "disk.img";
    std::vector<std::string> images;
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string dir = temp / fmt::format("layer-src-{}", i);
      build_layer_dir(dir, layers[i]);
      images.push_back(temp / fmt::format("layer-{}.erofs", i));
      make_erofs(dir, images.back(), erofs_uuid(i));
      if (prepare) prepare(i, images.back());
      erofs_uuids_.push_back(erofs_uuid(i));
    }
    lay_out(images);
  }
  // Ready-made layer images (e.g. the real tar-index layers of tests/data/fixtures), image i in
  // partition i+1; the partitions keep the PARTUUIDs part_uuid(i).
  static GptLayerDisk from_images(const TempDir& temp, const std::vector<std::string>& images) {
    GptLayerDisk disk;
    disk.image_ = temp / "disk.img";
    disk.lay_out(images);
    return disk;
  }
  static std::string erofs_uuid(size_t i) { return test_uuid(1, static_cast<unsigned>(i)); }
  static std::string part_uuid(size_t i) { return test_uuid(2, static_cast<unsigned>(i)); }
  const std::string& image() const { return image_; }
  size_t layers() const { return part_uuids_.size(); }

 private:
  GptLayerDisk() = default;

  // The raw disk: a GPT with one partition per image (rounded up to 1 MiB), each image
  // written at its partition's start.
  void lay_out(const std::vector<std::string>& images) {
    const uint64_t mib = 1 << 20;
    std::vector<uint64_t> sizes;
    uint64_t total = mib;  // partitions start at 1 MiB
    for (const auto& image : images) {
      uint64_t size = std::filesystem::file_size(image);
      sizes.push_back((size + mib - 1) / mib * mib);
      total += sizes.back();
    }
    total += mib;  // backup GPT
    {
      std::ofstream create(image_, std::ios::binary);
    }
    std::filesystem::resize_file(image_, total);
    std::vector<std::string> argv{"sgdisk", "-o"};
    if (images.size() > 128) argv.push_back(fmt::format("--resize-table={}", (images.size() + 3) / 4 * 4));
    uint64_t sector = 2048;
    for (size_t i = 0; i < images.size(); ++i) {
      uint64_t sectors = sizes[i] / 512;
      argv.push_back(fmt::format("-n{}:{}:{}", i + 1, sector, sector + sectors - 1));
      argv.push_back(fmt::format("-u{}:{}", i + 1, part_uuid(i)));
      offsets_.push_back(sector * 512);
      sector += sectors;
      part_uuids_.push_back(part_uuid(i));
    }
    argv.push_back(image_);
    must(run(argv), "sgdisk");
    int fd = ::open(image_.c_str(), O_WRONLY);
    for (size_t i = 0; i < images.size(); ++i) {
      std::string bytes = read_file(images[i]);
      if (::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offsets_[i])) !=
          static_cast<ssize_t>(bytes.size())) {
        ::close(fd);
        throw std::runtime_error("cannot write layer into " + image_);
      }
    }
    ::close(fd);
  }

  std::string image_;
  std::vector<uint64_t> offsets_;
  std::vector<std::string> part_uuids_;
  std::vector<std::string> erofs_uuids_;
};

inline std::string make_ext4_image(const TempDir& temp, const std::string& name = "upper.img") {
  std::string image = temp / name;
  {
    std::ofstream create(image, std::ios::binary);
  }
  std::filesystem::resize_file(image, 64 << 20);
  must(run({"mkfs.ext4", "-q", "-F", image}), "mkfs.ext4");
  return image;
}

// Storage objects as the host's compose emits them for a GPT disk (plus an ext4 upper).
inline std::vector<Storage> gpt_storages(const std::string& disk, size_t layers,
                                         const std::string& upper_device) {
  std::vector<Storage> storages;
  for (size_t i = 0; i < layers; ++i) {
    Storage lower;
    lower.driver = "blk";
    lower.source = disk;
    lower.fstype = "erofs";
    lower.options = {"ro",
                     "X-kata.multi-layer=true",
                     "X-kata.overlay-lower",
                     "X-kata.gpt-partitioned=true",
                     fmt::format("X-kata.partition-number={}", i + 1),
                     fmt::format("X-erofs-vmdk.layer-index={}", i),
                     fmt::format("X-erofs-vmdk.partuuid={}", GptLayerDisk::part_uuid(i)),
                     fmt::format("X-erofs-vmdk.erofs-uuid={}", GptLayerDisk::erofs_uuid(i))};
    storages.push_back(lower);
  }
  if (!upper_device.empty()) {
    Storage upper;
    upper.driver = "blk";
    upper.source = upper_device;
    upper.fstype = "ext4";
    upper.options = {"rw", "X-kata.multi-layer=true", "X-kata.overlay-upper",
                     "X-kata.mkdir.path={{ mount 0 }}/upper:0755",
                     "X-kata.mkdir.path={{ mount 0 }}/work:0755"};
    storages.push_back(upper);
  }
  return storages;
}

// Runs a teardown (no cgroups) when a test leaves early, so a failing test leaks no mounts.
class TeardownGuard {
 public:
  TeardownGuard(std::string base, std::string id, std::string rootfs)
      : base_(std::move(base)), id_(std::move(id)), rootfs_(std::move(rootfs)) {}
  ~TeardownGuard() {
    guest::TeardownRequest request;
    request.base_dir = base_;
    request.container_id = id_;
    request.rootfs = rootfs_;
    try {
      guest::teardown_rootfs(request);
    } catch (...) {
    }
  }

 private:
  std::string base_, id_, rootfs_;
};

inline guest::MountRequest mount_request(std::vector<Storage> storages, const std::string& id,
                                         const std::string& rootfs, const std::string& base) {
  guest::MountRequest request;
  request.storages = std::move(storages);
  request.container_id = id;
  request.rootfs = rootfs;
  request.base_dir = base;
  return request;
}

inline guest::TeardownRequest teardown_request(const std::string& id, const std::string& base) {
  guest::TeardownRequest request;
  request.container_id = id;
  request.base_dir = base;
  return request;
}

inline std::vector<std::string> mount_points_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& entry : guest::mounts_under(dir)) out.push_back(entry.mount_point);
  return out;
}

// Loop devices whose backing file is `path` (sysfs), to prove the driver released its own.
inline std::vector<std::string> loops_backed_by(const std::string& path) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::ifstream in(entry.path() / "loop" / "backing_file");
    std::string backing;
    if (in && std::getline(in, backing) && backing == path) out.push_back(entry.path().filename());
  }
  return out;
}

// What every teardown (and every rolled-back mount) must leave: nothing mounted under the
// driver's base directory or the rootfs, and no device-mapper device (a verity lower's device
// must go with its mount; on a kernel without device-mapper there are none to begin with).
inline void expect_nothing_left(const std::string& base, const std::string& rootfs) {
  EXPECT_TRUE(mount_points_under(base).empty()) << fmt::format("{}", fmt::join(mount_points_under(base), " "));
  EXPECT_TRUE(mount_points_under(rootfs).empty()) << fmt::format("{}", fmt::join(mount_points_under(rootfs), " "));
  auto dm = guest::device_mapper_names();
  EXPECT_TRUE(dm.empty()) << "device-mapper devices left: " << fmt::format("{}", fmt::join(dm, " "));
}

// Tears container `id` down in-process and checks the report is clean and nothing is left.
inline void teardown_and_expect_nothing_left(const std::string& id, const std::string& base,
                                             const std::string& rootfs) {
  auto report = guest::teardown_rootfs(teardown_request(id, base));
  EXPECT_TRUE(report.clean()) << report.to_json().dump(1);
  expect_nothing_left(base, rootfs);
}

// A cgroup made for the test (v2 under /sys/fs/cgroup/unified, or v1 freezer + pids), with a
// child cgroup so removal must go leaves first. Removed on destruction if teardown did not.
class TestCgroups {
 public:
  explicit TestCgroups(bool v2) {
    std::string name = fmt::format("evmdk-test-{:08x}", std::random_device{}());
    if (v2) {
      dirs_ = {"/sys/fs/cgroup/unified/" + name};
    } else {
      dirs_ = {"/sys/fs/cgroup/freezer/" + name, "/sys/fs/cgroup/pids/" + name};
    }
    for (const auto& dir : dirs_) {
      std::filesystem::create_directories(dir + "/payload");
    }
  }
  ~TestCgroups() {
    guest::kill_cgroup_processes(dirs_, std::chrono::milliseconds(2000));
    guest::remove_cgroups(dirs_, std::chrono::milliseconds(2000));
  }
  const std::vector<std::string>& dirs() const { return dirs_; }
  static bool available(bool v2) {
    return v2 ? std::filesystem::exists("/sys/fs/cgroup/unified/cgroup.procs")
              : std::filesystem::exists("/sys/fs/cgroup/freezer/cgroup.procs") && std::filesystem::exists("/sys/fs/cgroup/pids/cgroup.procs");
  }

  // Starts `script` under /bin/sh inside the payload child cgroup(s).
  pid_t spawn(const std::string& script) {
    pid_t pid = ::fork();
    if (pid == 0) {
      for (const auto& dir : dirs_) {
        int fd = ::open((dir + "/payload/cgroup.procs").c_str(), O_WRONLY);
        if (fd < 0 || ::write(fd, "0", 1) != 1) ::_exit(120);
        ::close(fd);
      }
      ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    pids_.push_back(pid);
    return pid;
  }
  void reap() {
    for (pid_t pid : pids_) ::waitpid(pid, nullptr, 0);
    pids_.clear();
  }

 private:
  std::vector<std::string> dirs_;
  std::vector<pid_t> pids_;
};

inline std::string storages_file(const TempDir& temp, const std::vector<Storage>& storages) {
  std::string path = temp / "storage.json";
  write_file(path, to_json(storages).dump(1));
  return path;
}

}  // namespace evmdk::test
