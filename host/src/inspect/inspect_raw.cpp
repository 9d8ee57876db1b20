// inspect of raw images: FIEMAP sharing and pmem readiness (inspect.h).
#include <fmt/format.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "evmdk/error.h"
#include "evmdk/host/inspect/inspect.h"

namespace evmdk::host {

ExtentSharing fiemap_sharing(int fd, uint64_t start, uint64_t length, const std::string& name) {
  constexpr size_t kBatch = 256;
  std::vector<uint64_t> buffer(
      (sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent)) / sizeof(uint64_t) + 1);
  ExtentSharing out;
  const uint64_t end = start + length;
  uint64_t at = start, mapped = 0;
  while (at < end) {
    std::fill(buffer.begin(), buffer.end(), 0);
    auto* map = reinterpret_cast<struct fiemap*>(buffer.data());
    map->fm_start = at;
    map->fm_length = end - at;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      throw SystemError(errno,
                        fmt::format("{}: FIEMAP (extent map) of bytes {}+{}", name, at, end - at));
    }
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    uint64_t next = at;
    for (uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
      const auto& e = map->fm_extents[i];
      const uint64_t lo = std::max<uint64_t>(e.fe_logical, at);
      const uint64_t hi = std::min<uint64_t>(e.fe_logical + e.fe_length, end);
      if (hi > lo) {
        mapped += hi - lo;
        if (e.fe_flags & FIEMAP_EXTENT_SHARED) {
          out.shared_bytes += hi - lo;
        } else {
          out.unshared_bytes += hi - lo;
        }
      }
      next = std::max<uint64_t>(next, e.fe_logical + e.fe_length);
      last = last || (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
    }
    if (last || next <= at) break;
    at = next;
  }
  out.hole_bytes = length - std::min(mapped, length);
  return out;
}

nlohmann::json pmem_readiness(uint64_t image_size, bool gpt, bool backup_at_end,
                              const std::vector<PmemRegion>& regions) {
  constexpr uint64_t k2MiB = uint64_t{2} << 20;
  constexpr uint64_t k4KiB = 4096;
  std::vector<std::string> problems;
  if (image_size % k2MiB != 0) {
    problems.push_back(fmt::format(
        "size {} bytes is not a multiple of 2 MiB (the guest gets no pmem device: \"misaligned, "
        "unable to map\"); pad it to {} bytes",
        image_size, (image_size / k2MiB + 1) * k2MiB));
  }
  if (gpt && !backup_at_end) {
    problems.push_back("the backup GPT is not in the last sector (sgdisk -e moves it)");
  }
  for (const auto& r : regions) {
    if (r.offset % k4KiB != 0 || r.length % k4KiB != 0) {
      problems.push_back(fmt::format(
          "{} at byte {} ({} bytes) does not start and end on 4 KiB (no DAX: \"unaligned "
          "partition for dax\")",
          r.name, r.offset, r.length));
    }
  }
  return {{"ready", problems.empty()}, {"size", image_size}, {"problems", problems}};
}

}  // namespace evmdk::host
