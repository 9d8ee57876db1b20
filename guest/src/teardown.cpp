// Teardown by identity: only what the (validated) journal records, each mount found by its
// mount id and unmounted where it is now, reached without following symlinks; loop devices by
// their backing identity; directories removed only when empty, through no symlink.
#include "teardown.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "crash_injection.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/contract/dm_names.h"
#include "evmdk/error.h"
#include "evmdk/guest/cgroup.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/loop_device.h"
#include "evmdk/guest/mountinfo.h"
#include "evmdk/guest/safe_path.h"
#include "evmdk/guest/verity.h"

namespace evmdk::guest {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

class Teardown {
 public:
  explicit Teardown(TeardownReport& report, std::chrono::milliseconds busy_timeout)
      : report_(report), busy_timeout_(busy_timeout) {}

  // Unmounts the mount a journal entry records (and everything mounted on or below it),
  // wherever it is now. A mount id that now belongs to another kind of mount is left alone.
  void unmount_recorded(const JournalMount& recorded, const std::string& what) {
    std::vector<MountEntry> mounts;
    if (!read(mounts)) return;
    const MountEntry* target = nullptr;
    if (recorded.id != 0) {
      target = find(mounts, recorded.id);
      if (target == nullptr) return;  // already unmounted
    } else {
      // Journaled before it was made: a crash right after mount(2). The topmost mount at the
      // recorded path, reached without symlinks, is the one it made.
      auto id = mount_id_nofollow(recorded.path);
      if (!id) {
        if (errno != ENOENT) {
          report_.problems.push_back(
              fmt::format("{} {} not unmounted: {} cannot be reached "
                          "without following a symlink ({})",
                          what, recorded.path, recorded.path, std::strerror(errno)));
        }
        return;
      }
      target = find(mounts, *id);
      if (target == nullptr || target->mount_point != recorded.path) return;  // not a mount point
    }
    // A mount id found elsewhere (the mount was moved) is never one that holds the base
    // directory or the rootfs: a tampered or stale id must not take /run or / with it.
    for (const auto& kept : keep_ancestors_of_) {
      if (!kept.empty() && target->mount_point != kept &&
          is_at_or_under(kept, target->mount_point)) {
        report_.problems.push_back(fmt::format(
            "{} {} (mount id {}) left alone: that id is now the mount at {}, which holds {}", what,
            recorded.path, target->id, target->mount_point, kept));
        return;
      }
    }
    if (target->fstype != recorded.fstype) {
      report_.problems.push_back(fmt::format(
          "{} {} (mount id {}) left alone: that id is now a {} mount at {}, not the {} recorded",
          what, recorded.path, target->id, target->fstype, target->mount_point, recorded.fstype));
      return;
    }
    unmount_subtree(mounts, target->id, what);
  }

  // Recorded mounts are never unmounted when they sit at or above one of these paths (except
  // at the path itself).
  void keep_ancestors_of(std::vector<std::string> paths) { keep_ancestors_of_ = std::move(paths); }

  // Unmounts every mount at or under `dir` (a directory of this container), topmost first.
  void sweep(const std::string& dir, const std::string& what) {
    std::vector<MountEntry> mounts;
    if (!read(mounts)) return;
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
      if (is_at_or_under(it->mount_point, dir)) unmount_one(*it, what);
    }
  }

 private:
  bool read(std::vector<MountEntry>& mounts) {
    try {
      mounts = read_mountinfo();
      return true;
    } catch (const std::exception& error) {
      report_.problems.push_back(error.what());
      return false;
    }
  }
  static const MountEntry* find(const std::vector<MountEntry>& mounts, uint64_t id) {
    for (const auto& entry : mounts) {
      if (static_cast<uint64_t>(entry.id) == id) return &entry;
    }
    return nullptr;
  }

  void unmount_subtree(const std::vector<MountEntry>& mounts, int root, const std::string& what) {
    std::set<int> ids{root};
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& entry : mounts) {
        if (ids.count(entry.parent_id) && entry.id != entry.parent_id &&
            ids.insert(entry.id).second)
          grew = true;
      }
    }
    // mountinfo lists parents before children: unmount in reverse.
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
      if (ids.count(it->id)) unmount_one(*it, what);
    }
  }

  // Unmounts `entry` at its mount point, but only when that path, resolved without symlinks,
  // still shows exactly this mount.
  void unmount_one(const MountEntry& entry, const std::string& what) {
    const std::string& path = entry.mount_point;
    auto id = mount_id_nofollow(path);
    if (!id) {
      if (errno == ENOENT) return;
      report_.problems.push_back(
          fmt::format("cannot unmount {} ({}, mount id {}): the path cannot "
                      "be reached without following a symlink ({})",
                      path, what, entry.id, std::strerror(errno)));
      return;
    }
    if (*id != static_cast<uint64_t>(entry.id)) {
      report_.problems.push_back(
          fmt::format("cannot unmount {} ({}, mount id {}): the path now "
                      "shows mount {}",
                      path, what, entry.id, *id));
      return;
    }
    auto deadline = Clock::now() + busy_timeout_;
    while (true) {
      if (::umount2(path.c_str(), UMOUNT_NOFOLLOW) == 0) {
        report_.actions.push_back(fmt::format("unmounted {} ({})", path, what));
        return;
      }
      if (errno == EINVAL || errno == ENOENT) return;  // no longer a mount point
      if (errno != EBUSY || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::string why = std::strerror(errno);
    if (errno == EBUSY && ::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
      report_.warnings.push_back(fmt::format(
          "{} ({}) was busy for {} ms; lazily detached (its device stays in use until the last "
          "user lets go)",
          path, what, busy_timeout_.count()));
      return;
    }
    report_.problems.push_back(fmt::format("cannot unmount {} ({}): {}", path, what, why));
  }

  TeardownReport& report_;
  std::chrono::milliseconds busy_timeout_;
  std::vector<std::string> keep_ancestors_of_;
};

}  // namespace

namespace {

// The journal, if any, with every entry this container cannot have made dropped (reported),
// marked as being torn down.
std::optional<Journal> load_checked_journal(const TeardownRequest& request, const std::string& base,
                                            const std::string& rootfs, TeardownReport& report) {
  std::optional<Journal> journal;
  try {
    journal = load_journal(base, request.container_id);
  } catch (const std::exception& error) {
    report.problems.push_back(error.what());
  }
  if (!journal) {
    report.actions.push_back(fmt::format("no journal {}: nothing recorded to remove",
                                         journal_path(base, request.container_id)));
    return journal;
  }
  auto refused = validate_journal(*journal, base, request.container_id, rootfs);
  report.problems.insert(report.problems.end(), refused.begin(), refused.end());
  journal->phase = "tearing-down";
  try {
    save_journal(*journal);
  } catch (const std::exception& error) {
    report.warnings.push_back(error.what());
  }
  return journal;
}

void kill_processes(const TeardownRequest& request, TeardownReport& report) {
  auto problems = kill_cgroup_processes(request.cgroups, request.kill_timeout);
  report.problems.insert(report.problems.end(), problems.begin(), problems.end());
  if (problems.empty()) report.actions.push_back("killed every process in the container's cgroups");
}

void remove_container_cgroups(const TeardownRequest& request, TeardownReport& report) {
  auto problems = remove_cgroups(request.cgroups, request.cgroup_remove_timeout);
  report.problems.insert(report.problems.end(), problems.begin(), problems.end());
  if (problems.empty()) report.actions.push_back("removed the container's cgroups");
}

void unmount_rootfs(Teardown& teardown, const Journal& journal) {
  for (auto it = journal.mounts.rbegin(); it != journal.mounts.rend(); ++it) {
    if (it->path == journal.rootfs) teardown.unmount_recorded(*it, "rootfs");
  }
}

// The upper and the lowers, in reverse order of mounting.
void unmount_layers(Teardown& teardown, const Journal& journal) {
  for (auto it = journal.mounts.rbegin(); it != journal.mounts.rend(); ++it) {
    if (it->path != journal.rootfs) teardown.unmount_recorded(*it, "recorded mount");
  }
}

// dm-verity devices over the lowers, now that nothing mounts them.
void remove_verity_devices(const Journal& journal, TeardownReport& report) {
  for (auto it = journal.verity_devices.rbegin(); it != journal.verity_devices.rend(); ++it) {
    try {
      if (remove_verity_device(*it)) {
        report.actions.push_back(fmt::format("removed dm-verity device {}", *it));
      }
    } catch (const std::exception& error) {
      report.problems.push_back(
          fmt::format("dm-verity device {} not removed: {}", *it, error.what()));
    }
  }
}

// Loop devices: autoclear normally released them with the unmount; detach any still bound to
// the very attachment recorded.
void detach_loops(const Journal& journal, const std::string& container_id, TeardownReport& report) {
  for (auto it = journal.loops.rbegin(); it != journal.loops.rend(); ++it) {
    try {
      switch (detach_loop_if_bound({it->device, contract::loop_tag(container_id), it->offset,
                                    it->backing_dev, it->backing_ino, it->diskseq})) {
        case LoopDetach::NotBound: break;
        case LoopDetach::Detached:
          report.actions.push_back(fmt::format("detached {}", it->device));
          break;
        case LoopDetach::StillInUse:
          report.warnings.push_back(fmt::format(
              "{} (over {}) is still in use; autoclear is set, so the kernel releases it when "
              "its last user lets go",
              it->device, it->backing));
          break;
      }
    } catch (const std::exception& error) {
      report.problems.push_back(error.what());
    }
  }
}

// The directories the mount created, deepest first, only when empty, never through a symlink.
// rmdir never recurses and fails on a mount point, so nothing below can be deleted. Those left
// in place stay in the journal.
void remove_created_dirs(Journal& journal, TeardownReport& report) {
  // A parent of the rootfs this mount created (e.g. /run/containers) may hold other
  // containers' rootfs directories by now: once the rootfs itself is gone, a non-empty
  // parent is left in place without failing the teardown.
  const std::string& journal_rootfs = journal.rootfs;
  auto shared_parent = [&](const std::string& dir) {
    struct stat st {};
    return journal_rootfs.size() > dir.size() && is_at_or_under(journal_rootfs, dir) &&
           ::lstat(journal_rootfs.c_str(), &st) != 0 && errno == ENOENT;
  };
  std::vector<std::string> kept;
  for (auto it = journal.created_dirs.rbegin(); it != journal.created_dirs.rend(); ++it) {
    int error = rmdir_nofollow(*it);
    if (error == 0) {
      report.actions.push_back(fmt::format("removed directory {}", *it));
    } else if (error != ENOENT) {
      if ((error == ENOTEMPTY || error == EEXIST) && shared_parent(*it)) {
        report.actions.push_back(fmt::format("kept directory {}: it holds entries of others", *it));
      } else {
        report.problems.push_back(
            fmt::format("directory {} left in place: {}", *it, std::strerror(error)));
      }
      kept.insert(kept.begin(), *it);
    }
  }
  journal.created_dirs = kept;
}

// A clean teardown removes the journal; otherwise it is kept, so the next one finishes the job.
void finish_journal(Journal& journal, const std::string& base, const std::string& container_id,
                    TeardownReport& report) {
  try {
    if (report.clean()) {
      remove_journal(base, container_id);
    } else {
      journal.phase = "teardown-incomplete";
      save_journal(journal);
    }
  } catch (const std::exception& error) {
    report.problems.push_back(error.what());
  }
}

}  // namespace

TeardownReport run_teardown(const TeardownRequest& request, bool rollback) {
  contract::validate_container_id(request.container_id);
  TeardownReport report;
  CrashInjection crash(request.crash_after);
  std::string base = normal_absolute(request.base_dir);
  std::string rootfs = normal_absolute(request.rootfs);
  std::optional<Journal> journal = load_checked_journal(request, base, rootfs, report);

  // 1. Kill every process of the container; 2. remove its cgroups.
  if (!request.cgroups.empty()) {
    kill_processes(request, report);
    crash.step_done("teardown:killed");
    remove_container_cgroups(request, report);
  }

  // 3. Unmount top-down, by identity: the rootfs and whatever is stacked on it, then the
  // upper and the lowers in reverse, then (not in a rollback) anything else left under the
  // container's own directory.
  Teardown teardown(report, request.unmount_busy_timeout);
  teardown.keep_ancestors_of({base, journal ? journal->rootfs : rootfs});
  if (journal) unmount_rootfs(teardown, *journal);
  crash.step_done("teardown:rootfs-unmounted");
  if (journal) unmount_layers(teardown, *journal);
  if (!rollback) {
    teardown.sweep(base + "/" + request.container_id, "left under the container directory");
  }
  crash.step_done("teardown:unmounted");
  if (!journal) return report;

  // 4. The devices under the lowers; 5. the directories it created; then the journal itself.
  remove_verity_devices(*journal, report);
  detach_loops(*journal, request.container_id, report);
  remove_created_dirs(*journal, report);
  finish_journal(*journal, base, request.container_id, report);
  return report;
}

}  // namespace detail

nlohmann::json TeardownReport::to_json() const {
  return {{"clean", clean()}, {"actions", actions}, {"warnings", warnings}, {"problems", problems}};
}

TeardownReport teardown_rootfs(const TeardownRequest& request) {
  return detail::run_teardown(request, false);
}

nlohmann::json rootfs_status(const std::string& base_dir, const std::string& container_id) {
  contract::validate_container_id(container_id);
  std::string base = normal_absolute(base_dir);
  nlohmann::json out;
  out["container_id"] = container_id;
  auto journal = load_journal(base, container_id);
  auto problems = nlohmann::json::array();
  out["journal"] = journal ? to_json(*journal) : nlohmann::json(nullptr);
  if (journal) {
    for (auto& refused : validate_journal(*journal, base, container_id, {}))
      problems.push_back(refused);
  }
  auto mounts = nlohmann::json::array();
  std::vector<std::string> dirs{base + "/" + container_id};
  if (journal && !journal->rootfs.empty()) dirs.push_back(journal->rootfs);
  for (const auto& dir : dirs) {
    for (const auto& entry : mounts_under(dir)) {
      nlohmann::json mount{
          {"mount_point", entry.mount_point}, {"fstype", entry.fstype}, {"source", entry.source}};
      // Whether an EROFS lower reads through DAX (its super options say dax=always).
      if (entry.fstype == "erofs") {
        mount["dax"] = ("," + entry.super_options + ",").find(",dax=always,") != std::string::npos;
      }
      mounts.push_back(std::move(mount));
    }
  }
  out["mounted"] = mounts;
  out["state"] = !journal ? (mounts.empty() ? "absent" : "unrecorded mounts") : journal->phase;
  // Which layer an I/O error came from: the kernel marks a dm-verity device corrupted at the
  // first block that fails verification.
  auto verity = nlohmann::json::array();
  if (journal) {
    for (const auto& name : journal->verity_devices) {
      auto parsed = contract::parse_verity_device_name(name, container_id);
      std::string layer = parsed ? contract::describe_verity_device(*parsed) : name;
      nlohmann::json entry{{"name", name}, {"layer", layer}};
      try {
        auto corrupted = verity_device_corrupted(name);
        entry["state"] = !corrupted ? "absent" : *corrupted ? "corrupted" : "verified";
        if (corrupted && *corrupted) {
          problems.push_back(
              fmt::format("{}: dm-verity found corrupted data (device {}); reads "
                          "of the bad blocks fail with EIO",
                          layer, name));
        }
      } catch (const std::exception& error) {
        entry["state"] = "unknown";
        entry["error"] = error.what();
      }
      verity.push_back(std::move(entry));
    }
  }
  out["verity"] = verity;
  out["problems"] = problems;
  return out;
}

}  // namespace evmdk::guest
