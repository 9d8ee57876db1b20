#pragma once
// RAII owner of a file descriptor, so no error path can forget to close one.
#include <string>
#include <utility>

namespace evmdk {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// open(2) that throws an Error naming the path on failure. O_CLOEXEC is always added.
UniqueFd open_or_throw(const std::string& path, int flags, unsigned mode = 0);
// openat(2) relative to a directory fd, same contract.
UniqueFd openat_or_throw(int dir_fd, const std::string& path, int flags, unsigned mode = 0);

// Reads exactly `size` bytes at `offset`; throws on error or short read (naming `what`).
void pread_exact(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what);
// Reads up to `size` bytes at `offset`, returns bytes read (short only at EOF).
size_t pread_full(int fd, void* buffer, size_t size, uint64_t offset, const std::string& what);
// Writes all of `size` bytes at `offset` (or at the current position when offset < 0).
void write_all(int fd, const void* buffer, size_t size, const std::string& what,
               int64_t offset = -1);

}  // namespace evmdk
