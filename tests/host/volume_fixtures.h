#pragma once
// Loop-mounted read-write filesystems (XFS with reflink, btrfs, ext4) and FIEMAP helpers for
// the raw-image root tests (raw_image_root_test.cpp, compose_raw_root_test.cpp).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/compose/raw_image.h"
#include "layer_fixtures.h"
#include "loop_fixtures.h"

namespace evmdk::host {

namespace volume_fs = std::filesystem;

inline constexpr uint64_t kMiB = uint64_t{1} << 20;

// A read-write filesystem of `fstype` on a loop device over a sparse file, mounted at
// `mountpoint`; unmounted and detached on destruction.
class LoopVolume {
 public:
  LoopVolume(const std::string& backing, const std::string& mountpoint, const std::string& fstype,
             uint64_t size)
      : mountpoint_(mountpoint) {
    {
      UniqueFd fd = open_or_throw(backing, O_RDWR | O_CREAT | O_TRUNC, 0600);
      if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw std::runtime_error("size");
    }
    std::vector<std::string> mkfs;
    if (fstype == "xfs") mkfs = {"mkfs.xfs", "-q", "-f", "-m", "reflink=1", backing};
    if (fstype == "btrfs") mkfs = {"mkfs.btrfs", "-q", "-f", backing};
    if (fstype == "ext4") mkfs = {"mkfs.ext4", "-q", "-F", backing};
    auto made = test::run(mkfs);
    if (made.exit_code != 0) throw std::runtime_error(mkfs[0] + ": " + made.out + made.err);
    auto loop = test::run({"losetup", "--find", "--show", backing});
    if (loop.exit_code != 0) throw std::runtime_error("losetup: " + loop.err);
    device_ = loop.out.substr(0, loop.out.find('\n'));
    volume_fs::create_directories(mountpoint);
    if (::mount(device_.c_str(), mountpoint.c_str(), fstype.c_str(), 0, nullptr) != 0) {
      std::string why = strerror(errno);
      test::run({"losetup", "--detach", device_});
      throw std::runtime_error("mount " + fstype + " " + device_ + ": " + why);
    }
  }
  ~LoopVolume() {
    ::umount2(mountpoint_.c_str(), 0);
    test::run({"losetup", "--detach", device_});
  }
  LoopVolume(const LoopVolume&) = delete;
  LoopVolume& operator=(const LoopVolume&) = delete;

  const std::string& path() const { return mountpoint_; }
  std::string operator/(const std::string& name) const { return mountpoint_ + "/" + name; }

  // Free bytes after everything written so far reached the disk.
  uint64_t free_bytes() const {
    UniqueFd fd = open_or_throw(mountpoint_, O_RDONLY | O_DIRECTORY);
    ::syncfs(fd.get());
    struct statvfs st {};
    if (::fstatvfs(fd.get(), &st) != 0) throw std::runtime_error("statvfs");
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

 private:
  std::string mountpoint_;
  std::string device_;
};

inline std::optional<std::string> missing_prerequisites() {
  if (auto why = test::missing_root()) return why;
  return test::missing_tools(
      {"mkfs.erofs", "mkfs.xfs", "mkfs.btrfs", "mkfs.ext4", "qemu-img", "losetup"});
}

struct MappedExtent {
  uint64_t logical = 0, length = 0;
  uint32_t flags = 0;
};

// FS_IOC_FIEMAP over [start, start + length) of `path`, extents clipped to the range.
inline std::vector<MappedExtent> fiemap(const std::string& path, uint64_t start, uint64_t length) {
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  constexpr size_t kBatch = 128;
  std::vector<char> buffer(sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent));
  std::vector<MappedExtent> out;
  uint64_t end = start + length;
  for (uint64_t at = start; at < end;) {
    std::fill(buffer.begin(), buffer.end(), 0);
    auto* map = reinterpret_cast<struct fiemap*>(buffer.data());
    map->fm_start = at;
    map->fm_length = end - at;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kBatch;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, map) != 0) {
      throw std::runtime_error("FIEMAP " + path + ": " + strerror(errno));
    }
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
      const auto& e = map->fm_extents[i];
      uint64_t from = std::max<uint64_t>(e.fe_logical, start);
      uint64_t to = std::min<uint64_t>(e.fe_logical + e.fe_length, end);
      if (to > from) out.push_back({from, to - from, e.fe_flags});
      at = e.fe_logical + e.fe_length;
      last = last || (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
    }
    if (last) break;
  }
  return out;
}

inline uint64_t mapped_bytes(const std::vector<MappedExtent>& extents) {
  uint64_t sum = 0;
  for (const auto& e : extents) sum += e.length;
  return sum;
}

// Every extent of the image's range of a shared piece is FIEMAP_EXTENT_SHARED, and the image
// maps as many bytes there as the layer file does in its range.
inline void expect_shared(const std::string& image, const std::string& layer,
                          const RawPieceReport& piece, uint64_t block) {
  SCOPED_TRACE(piece.name);
  uint64_t head = (block - piece.disk_offset % block) % block;
  ASSERT_GT(piece.shared_bytes, 0u);
  auto in_image = fiemap(image, piece.disk_offset + head, piece.shared_bytes);
  auto in_layer = fiemap(layer, piece.source_offset + head, piece.shared_bytes);
  ASSERT_FALSE(in_image.empty());
  for (const auto& e : in_image) {
    EXPECT_NE(e.flags & FIEMAP_EXTENT_SHARED, 0u)
        << "image bytes " << e.logical << "+" << e.length << " are not shared (flags 0x" << std::hex
        << e.flags << ")";
  }
  EXPECT_EQ(mapped_bytes(in_image), mapped_bytes(in_layer));
  EXPECT_GT(mapped_bytes(in_image), 0u);
}

// The layer's own extents before assembly: not shared with anything (so SHARED afterwards is
// the image's doing).
inline void expect_not_shared(const std::string& layer) {
  auto size = volume_fs::file_size(layer);
  for (const auto& e : fiemap(layer, 0, size)) {
    EXPECT_EQ(e.flags & FIEMAP_EXTENT_SHARED, 0u) << layer << " is already shared";
  }
}

// "" when identical, else where they first differ.
inline std::string compare_files(const std::string& a, const std::string& b) {
  UniqueFd fa = open_or_throw(a, O_RDONLY), fb = open_or_throw(b, O_RDONLY);
  auto sa = volume_fs::file_size(a), sb = volume_fs::file_size(b);
  if (sa != sb) return "sizes differ: " + std::to_string(sa) + " vs " + std::to_string(sb);
  std::string ba(kMiB, '\0'), bb(kMiB, '\0');
  for (uint64_t at = 0; at < sa; at += kMiB) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kMiB, sa - at));
    pread_exact(fa.get(), ba.data(), n, at, a);
    pread_exact(fb.get(), bb.data(), n, at, b);
    if (std::memcmp(ba.data(), bb.data(), n) != 0) {
      for (size_t i = 0; i < n; ++i) {
        if (ba[i] != bb[i]) return "first difference at byte " + std::to_string(at + i);
      }
    }
  }
  return "";
}

}  // namespace evmdk::host
