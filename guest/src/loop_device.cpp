#include "evmdk/guest/loop_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "evmdk/error.h"

namespace evmdk::guest {

namespace {

// The attachment `loop_fd` has now (throws when it has none).
LoopIdentity current_identity(int loop_fd, const std::string& path) {
  loop_info64 info{};
  if (::ioctl(loop_fd, LOOP_GET_STATUS64, &info) != 0) throw_errno("cannot query {}", path);
  LoopIdentity identity;
  identity.device = path;
  identity.offset = info.lo_offset;
  identity.backing_dev = info.lo_device;
  identity.backing_ino = info.lo_inode;
  identity.tag.assign(reinterpret_cast<const char*>(info.lo_file_name),
                      strnlen(reinterpret_cast<const char*>(info.lo_file_name), LO_NAME_SIZE));
#ifdef BLKGETDISKSEQ
  uint64_t seq = 0;
  if (::ioctl(loop_fd, BLKGETDISKSEQ, &seq) == 0) identity.diskseq = seq;  // 5.15+
#endif
  return identity;
}

}  // namespace

LoopDevice LoopDevice::attach(const std::string& backing, uint64_t offset, uint64_t size_limit,
                              const std::string& tag) {
  if (tag.empty() || tag.size() >= LO_NAME_SIZE)
    throw Error("loop tag '{}' must be 1..{} bytes", tag, LO_NAME_SIZE - 1);
  UniqueFd backing_fd = open_or_throw(backing, O_RDONLY);
  UniqueFd control = open_or_throw("/dev/loop-control", O_RDWR);
  // Another process can grab the free device between GET_FREE and CONFIGURE (EBUSY): retry.
  for (int attempt = 0; attempt < 64; ++attempt) {
    int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) throw_errno("cannot get a free loop device for {}", backing);
    std::string path = fmt::format("/dev/loop{}", number);
    UniqueFd loop_fd;
    for (int wait = 0; wait < 100; ++wait) {  // devtmpfs may create the node a moment later
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        loop_fd.reset(fd);
        break;
      }
      if (errno != ENOENT) throw_errno("cannot open {}", path);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!loop_fd) throw Error("loop device node {} did not appear", path);
    loop_config config{};
    config.fd = static_cast<uint32_t>(backing_fd.get());
    config.info.lo_offset = offset;
    config.info.lo_sizelimit = size_limit;
    config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    std::memcpy(config.info.lo_file_name, tag.data(), tag.size());
    if (::ioctl(loop_fd.get(), LOOP_CONFIGURE, &config) == 0) {
      LoopDevice device;
      device.path_ = path;
      device.identity_ = current_identity(loop_fd.get(), path);
      device.fd_ = std::move(loop_fd);
      return device;
    }
    if (errno != EBUSY) {
      throw_errno("cannot attach {} (offset {}, size {}) to {}", backing, offset, size_limit, path);
    }
  }
  throw Error("cannot attach {}: every free loop device was taken concurrently", backing);
}

LoopDevice::~LoopDevice() = default;

LoopDetach detach_loop_if_bound(const LoopIdentity& identity) {
  auto same = [&](bool& matches) {
    int fd = ::open(identity.device.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT || errno == ENXIO) return false;
      throw_errno("cannot open {}", identity.device);
    }
    UniqueFd loop_fd(fd);
    struct stat st {};
    if (::fstat(loop_fd.get(), &st) != 0 || !S_ISBLK(st.st_mode)) {
      throw Error("{} is not a block device; left alone", identity.device);
    }
    loop_info64 info{};
    if (::ioctl(loop_fd.get(), LOOP_GET_STATUS64, &info) != 0) {
      if (errno == ENXIO) return false;  // not bound
      throw_errno("cannot query {}", identity.device);
    }
    LoopIdentity now = current_identity(loop_fd.get(), identity.device);
    matches = !identity.tag.empty() && now.tag == identity.tag && now.offset == identity.offset &&
              now.backing_dev == identity.backing_dev && now.backing_ino == identity.backing_ino &&
              (identity.diskseq == 0 || now.diskseq == identity.diskseq);
    return true;
  };
  bool matches = false;
  if (!same(matches) || !matches) return LoopDetach::NotBound;
  {
    UniqueFd loop_fd = open_or_throw(identity.device, O_RDONLY);
    // Kernels only turn on autoclear when others hold the device; the detach then happens at
    // their last close (and, on newer kernels, at ours).
    if (::ioctl(loop_fd.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
      throw_errno("cannot detach {}", identity.device);
    }
  }
  for (int attempt = 0; attempt < 25; ++attempt) {
    if (!same(matches) || !matches) return LoopDetach::Detached;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return LoopDetach::StillInUse;
}

}  // namespace evmdk::guest
