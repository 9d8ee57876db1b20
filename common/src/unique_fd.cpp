#include "evmdk/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "evmdk/error.h"

namespace evmdk {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_or_throw(const std::string& path, int flags, unsigned mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("cannot open {}", path);
  return UniqueFd(fd);
}

UniqueFd openat_or_throw(int dir_fd, const std::string& path, int flags, unsigned mode) {
  int fd = ::openat(dir_fd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("cannot open {}", path);
  return UniqueFd(fd);
}

size_t pread_full(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what) {
  auto* out = static_cast<unsigned char*>(buffer);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot read {} at offset {}", what, offset + done);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

void pread_exact(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what) {
  size_t got = pread_full(fd, buffer, size, offset, what);
  if (got != size) {
    throw Error("{}: truncated: wanted {} bytes at offset {}, file ends after {}", what, size,
                offset, offset + got);
  }
}

void write_all(int fd, const void* buffer, size_t size, const std::string& what, int64_t offset) {
  const auto* in = static_cast<const unsigned char*>(buffer);
  size_t done = 0;
  while (done < size) {
    ssize_t n = offset < 0
                    ? ::write(fd, in + done, size - done)
                    : ::pwrite(fd, in + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write {}", what);
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace evmdk
