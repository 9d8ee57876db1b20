#pragma once
// Shared by the libFuzzer targets: an in-memory file (memfd) holding the input, so parsers that
// read through a file descriptor or a path see exactly the fuzzer's bytes, and a check that
// aborts with a message (a failed invariant is a bug, like a crash).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::fuzz {

inline void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

// One memfd reused for every input (created once per process: fuzzers run millions of inputs).
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (!fd_) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_.get());
  }
  // Replaces the contents with `bytes`, then extends to `size` (zeros) when larger.
  void set(std::string_view bytes, uint64_t size = 0) {
    if (::ftruncate(fd_.get(), 0) != 0) std::abort();
    if (!bytes.empty()) write_all(fd_.get(), bytes.data(), bytes.size(), path_, 0);
    if (size > bytes.size() && ::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) std::abort();
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  UniqueFd fd_;
  std::string path_;
};

}  // namespace evmdk::fuzz
