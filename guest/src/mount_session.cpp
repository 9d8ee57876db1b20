#include "mount_session.h"

#include "evmdk/error.h"
#include "evmdk/guest/safe_path.h"

namespace evmdk::guest::detail {

void MountSession::make_dirs(const std::string& path, mode_t mode, const std::string& what) {
  make_dirs_nofollow(path, mode, what, [&](const std::string& created) {
    std::lock_guard lock(mutex_);
    journal_.created_dirs.push_back(created);
  });
}

void MountSession::will_activate_verity(const std::string& name) {
  std::lock_guard lock(mutex_);
  journal_.verity_devices.push_back(name);
  save_journal(journal_);
}

void MountSession::attached_loop(const LoopDevice& loop, const std::string& backing) {
  const LoopIdentity& id = loop.identity();
  std::lock_guard lock(mutex_);
  journal_.loops.push_back(
      {loop.path(), backing, id.offset, id.backing_dev, id.backing_ino, id.diskseq});
}

void MountSession::will_mount_all(const std::vector<JournalMount>& mounts) {
  std::lock_guard lock(mutex_);
  journal_.mounts.insert(journal_.mounts.end(), mounts.begin(), mounts.end());
  save_journal(journal_);
}

void MountSession::mounted(const std::string& path) {
  auto id = mount_id_nofollow(path);
  if (!id) throw_errno("cannot read the mount id of {}", path);
  std::lock_guard lock(mutex_);
  for (auto& mount : journal_.mounts) {
    if (mount.path == path && mount.id == 0) {
      mount.id = *id;
      return;
    }
  }
}

void MountSession::set_phase(const std::string& phase) {
  std::lock_guard lock(mutex_);
  journal_.phase = phase;
  save_journal(journal_);
}

void MountSession::save() {
  std::lock_guard lock(mutex_);
  save_journal(journal_);
}

}  // namespace evmdk::guest::detail
