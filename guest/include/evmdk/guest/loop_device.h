#pragma once
// A read-only loop device over a slice of a file or block device, configured in one step with
// LOOP_CONFIGURE. The owner holds the device open; LO_FLAGS_AUTOCLEAR makes the kernel release
// it when the last user (e.g. a mount using it) goes away, so a crashed process leaks nothing.
#include <cstdint>
#include <string>

#include "evmdk/unique_fd.h"

namespace evmdk::guest {

// Which attachment a loop device is: its node, what it maps and at which offset, the backing
// file's device/inode as the loop driver reports them, and the device's diskseq (bumped by the
// kernel at every attach; 0 on kernels without it).
struct LoopIdentity {
  std::string device;
  std::string tag;  // lo_file_name the owner set
  uint64_t offset = 0;
  uint64_t backing_dev = 0;
  uint64_t backing_ino = 0;
  uint64_t diskseq = 0;
};

class LoopDevice {
 public:
  // Attaches `backing` [offset, offset + size_limit) read-only to a free loop device, with
  // `tag` (at most 63 bytes) as its lo_file_name: the owner's mark, checked again on detach.
  static LoopDevice attach(const std::string& backing, uint64_t offset, uint64_t size_limit,
                           const std::string& tag);

  LoopDevice() = default;
  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&&) noexcept = default;
  ~LoopDevice();  // drops our reference; with autoclear the kernel detaches when unused

  const std::string& path() const { return path_; }
  const LoopIdentity& identity() const { return identity_; }
  // Stops owning the device (it stays attached while someone else holds it open).
  void release() { fd_.reset(); }

 private:
  std::string path_;
  LoopIdentity identity_;
  UniqueFd fd_;
};

enum class LoopDetach {
  NotBound,  // already free, or bound to something else (left alone)
  Detached,
  StillInUse,  // someone still holds it: autoclear is set, the kernel frees it at last close
};

// Detaches `identity.device` if it is still this attachment (same owner tag, backing
// device/inode and offset, and same diskseq when one was recorded) with LOOP_CLR_FD; anything
// else is left alone. The tag is compared exactly (an empty lo_file_name never matches).
LoopDetach detach_loop_if_bound(const LoopIdentity& identity);

}  // namespace evmdk::guest
