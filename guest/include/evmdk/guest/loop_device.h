#pragma once
// A read-only loop device over a slice of a file or block device, configured in one step with
// LOOP_CONFIGURE. The owner holds the device open; LO_FLAGS_AUTOCLEAR makes the kernel release
// it when the last user (e.g. a mount using it) goes away, so a crashed process leaks nothing.
#include <cstdint>
#include <string>

#include "evmdk/unique_fd.h"

namespace evmdk::guest {

class LoopDevice {
 public:
  // Attaches `backing` [offset, offset + size_limit) read-only to a free loop device.
  static LoopDevice attach(const std::string& backing, uint64_t offset, uint64_t size_limit);

  LoopDevice() = default;
  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&&) noexcept = default;
  ~LoopDevice();  // drops our reference; with autoclear the kernel detaches when unused

  const std::string& path() const { return path_; }
  // Stops owning the device (it stays attached while someone else holds it open).
  void release() { fd_.reset(); }

 private:
  std::string path_;
  UniqueFd fd_;
};

enum class LoopDetach {
  NotBound,    // already free, or bound to something else (left alone)
  Detached,
  StillInUse,  // someone still holds it: autoclear is set, the kernel frees it at last close
};

// Detaches `loop_path` if it is still bound to `backing` at `offset` (LOOP_CLR_FD).
LoopDetach detach_loop_if_bound(const std::string& loop_path, const std::string& backing,
                                uint64_t offset);

}  // namespace evmdk::guest
