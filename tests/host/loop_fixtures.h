#pragma once
// Root-test helpers: a partition-scanned loop device and a read-only mount, both released in
// their destructors (so a failing test leaves nothing behind), and a tree description that
// compares what a mounted layer holds with the directory it was built from.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>
#include <string>
#include <thread>

#include "test_support.h"

namespace evmdk::test {

class LoopDevice {
 public:
  // Read-only loop device over `image`; with `partscan` the kernel reads its partition table,
  // otherwise `offset`/`size` (bytes, size 0 = to the end) select a slice.
  LoopDevice(const std::string& image, bool partscan, uint64_t offset = 0, uint64_t size = 0) {
    std::vector<std::string> argv{"losetup", "--find", "--show", "--read-only"};
    if (partscan) argv.push_back("--partscan");
    if (offset) argv.push_back("--offset=" + std::to_string(offset));
    if (size) argv.push_back("--sizelimit=" + std::to_string(size));
    argv.push_back(image);
    auto result = run(argv);
    if (result.exit_code != 0) throw std::runtime_error("losetup failed: " + result.err);
    device_ = result.out.substr(0, result.out.find('\n'));
  }
  ~LoopDevice() {
    if (!device_.empty()) run({"losetup", "--detach", device_});
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& device() const { return device_; }
  std::string partition(size_t number) const { return device_ + "p" + std::to_string(number); }

  // Waits (bounded) until partitions 1..count exist, asking for a re-read when they do not
  // show up: right after losetup -P they may not be there yet.
  bool wait_for_partitions(size_t count, std::chrono::seconds limit = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    auto next_reread = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < deadline) {
      if (std::filesystem::exists(partition(count)) && std::filesystem::exists(partition(1))) {
        return true;
      }
      if (std::chrono::steady_clock::now() >= next_reread) {
        run({"blockdev", "--rereadpt", device_});
        next_reread = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  std::string device_;
};

// Whether the running kernel has a GPT parser (CONFIG_EFI_PARTITION). Some VM kernels (this
// CI machine's 6.18 "fc" kernel) are built with no partition parsers at all: losetup -P then
// never shows partitions however long one waits.
inline bool kernel_parses_gpt() {
  for (const char* command : {"zcat /proc/config.gz 2>/dev/null",
                              "cat /boot/config-$(uname -r) 2>/dev/null"}) {
    auto config = sh(command);
    if (config.exit_code == 0 && !config.out.empty()) {
      return config.out.find("CONFIG_EFI_PARTITION=y") != std::string::npos;
    }
  }
  return true;  // unknown: assume the common case, and the partition wait will tell
}

// The partitions of a raw GPT disk as block devices. With a GPT-parsing kernel: one
// partition-scanned loop device (partitions /dev/loopNpM, found with a bounded poll and a
// re-read). Without one: one loop device per partition at the offsets libblkid's own GPT
// parser reports (`parts` = {first byte, size} per partition, from the caller).
class PartitionedDisk {
 public:
  PartitionedDisk(const std::string& raw, const std::vector<std::pair<uint64_t, uint64_t>>& parts)
      : kernel_partitions_(kernel_parses_gpt()) {
    if (kernel_partitions_) {
      whole_ = std::make_unique<LoopDevice>(raw, true);
      if (!whole_->wait_for_partitions(parts.size())) {
        throw std::runtime_error("partitions of " + whole_->device() + " never appeared");
      }
    } else {
      std::printf("note: the running kernel has no GPT parser (CONFIG_EFI_PARTITION unset): "
                  "using one loop device per partition at libblkid's offsets\n");
      for (const auto& [offset, size] : parts) {
        slices_.push_back(std::make_unique<LoopDevice>(raw, false, offset, size));
      }
    }
  }
  bool kernel_partitions() const { return kernel_partitions_; }
  std::string partition(size_t number) const {
    return kernel_partitions_ ? whole_->partition(number) : slices_.at(number - 1)->device();
  }

 private:
  bool kernel_partitions_;
  std::unique_ptr<LoopDevice> whole_;
  std::vector<std::unique_ptr<LoopDevice>> slices_;
};

class ReadOnlyMount {
 public:
  ReadOnlyMount(const std::string& source, const std::string& target, const std::string& type,
                const std::string& options = {})
      : target_(target) {
    std::filesystem::create_directories(target);
    if (::mount(source.c_str(), target.c_str(), type.c_str(), MS_RDONLY,
                options.empty() ? nullptr : options.c_str()) != 0) {
      throw std::runtime_error("mount " + source + " on " + target + ": " + strerror(errno));
    }
    mounted_ = true;
  }
  ~ReadOnlyMount() {
    if (mounted_) ::umount2(target_.c_str(), 0);
  }
  ReadOnlyMount(const ReadOnlyMount&) = delete;
  ReadOnlyMount& operator=(const ReadOnlyMount&) = delete;

 private:
  std::string target_;
  bool mounted_ = false;
};

// path -> "type mode size/rdev content [opaque]" for every entry below root.
inline std::map<std::string, std::string> describe_tree(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    std::string path = entry.path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw std::runtime_error("lstat " + path);
    std::string relative = std::filesystem::relative(entry.path(), root).string();
    std::string d = std::to_string(st.st_mode & 07777) + " ";
    if (S_ISREG(st.st_mode)) {
      d += "file " + read_file(path);
    } else if (S_ISDIR(st.st_mode)) {
      char value[8] = {};
      ssize_t n = ::lgetxattr(path.c_str(), "trusted.overlay.opaque", value, sizeof value);
      d += "dir";
      if (n > 0) d += std::string(" opaque=") + std::string(value, static_cast<size_t>(n));
    } else if (S_ISCHR(st.st_mode)) {
      d += "chr " + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    } else if (S_ISLNK(st.st_mode)) {
      d += "link " + std::filesystem::read_symlink(entry.path()).string();
    } else {
      d += "other";
    }
    out[relative] = d;
  }
  return out;
}

}  // namespace evmdk::test
