#pragma once
// Private to the driver: what the steps of one mount share. The paths it mounts at, and the
// journal, saved to disk after every change a crash must not lose (docs/guest.md "Mount").
#include <sys/types.h>

#include <mutex>
#include <string>
#include <vector>

#include "evmdk/guest/journal.h"
#include "evmdk/guest/loop_device.h"
#include "evmdk/guest/policy.h"

namespace evmdk::guest::detail {

// Where one container's mounts go: <base>/<id>/multi-layer/{upper,lower-0..}, and the rootfs.
struct ContainerPaths {
  std::string base;                 // shared by containers: created, never removed
  std::string container_dir;        // <base>/<id>
  std::string layer_dir;            // <base>/<id>/multi-layer
  std::string upper_dir;            // <layer_dir>/upper
  std::vector<std::string> lowers;  // <layer_dir>/lower-<i>, lower-0 first
  std::string rootfs;

  // The root of template mount N ({{ mount N }}): 0 is the upper, N >= 1 lower-(N-1).
  const std::string& mount_root(unsigned index) const {
    return index == 0 ? upper_dir : lowers.at(index - 1);
  }
};

// The journal of one mount, shared by the concurrent lower workers (every method is
// thread-safe).
class MountSession {
 public:
  MountSession(Journal journal, const Policy& policy)
      : journal_(std::move(journal)), policy_(policy) {}

  const Policy& policy() const { return policy_; }
  const std::string& container_id() const { return journal_.container_id; }

  // Directories are created without following symlinks, and journaled so teardown removes
  // them (saved with the next save()).
  void make_dirs(const std::string& path, mode_t mode, const std::string& what);
  // Journaled (and saved) before activation, so a crash mid-activation leaves its name behind.
  void will_activate_verity(const std::string& name);
  // libcryptsetup (and the libdevmapper under it) keeps process-wide state and is not safe to
  // call from the concurrent lower workers: two activations at once crashed the driver in the
  // guest (guest_verity_mount_qemu_test). Activations take turns; the mounts stay concurrent.
  [[nodiscard]] std::unique_lock<std::mutex> lock_device_mapper() {
    return std::unique_lock<std::mutex>(device_mapper_mutex_);
  }
  // Saved after the lowers: until a mount holds it, an autoclear loop device is released by
  // the kernel when this process dies, and the unmount releases it afterwards.
  void attached_loop(const LoopDevice& loop, const std::string& backing);
  // Every mount point, journaled (and saved) in one write before any mount is made.
  void will_mount_all(const std::vector<JournalMount>& mounts);
  // Records the id of the mount just made at `path` (the topmost there, reached without
  // symlinks): teardown finds it by that id wherever it is moved to. Saved with the next save().
  void mounted(const std::string& path);
  void set_phase(const std::string& phase);
  void save();

 private:
  std::mutex mutex_;
  std::mutex device_mapper_mutex_;
  Journal journal_;
  const Policy& policy_;
};

}  // namespace evmdk::guest::detail
