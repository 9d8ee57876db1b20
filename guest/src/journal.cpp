#include "evmdk/guest/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "evmdk/atomic_file.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/contract/dm_names.h"
#include "evmdk/error.h"
#include "evmdk/guest/safe_path.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest {
namespace {

using nlohmann::json;

// The journal directory, opened without following symlinks, checked to be root-only: a
// journal others could write is not one this driver wrote.
UniqueFd open_journal_dir(const std::string& dir) {
  UniqueFd fd = open_nofollow(dir, true);
  if (!fd) {
    if (errno == ENOENT) return fd;
    throw_errno("cannot open journal directory {} without following symlinks", dir);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot inspect journal directory {}", dir);
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    throw Error(
        "journal directory {} is not root-only (owner {}, mode {:04o}); refusing to trust "
        "the journals in it",
        dir, st.st_uid, st.st_mode & 07777);
  }
  return fd;
}

const json& field(const json& object, const char* name, const std::string& what) {
  auto it = object.find(name);
  if (it == object.end()) throw Error("journal {} is corrupt: no '{}'", what, name);
  return *it;
}

std::string string_field(const json& object, const char* name, const std::string& what) {
  const json& value = field(object, name, what);
  if (!value.is_string()) throw Error("journal {} is corrupt: '{}' is not a string", what, name);
  return value.get<std::string>();
}

uint64_t u64_field(const json& object, const char* name, const std::string& what) {
  const json& value = field(object, name, what);
  if (!value.is_number_unsigned()) {
    throw Error("journal {} is corrupt: '{}' is not a non-negative integer", what, name);
  }
  return value.get<uint64_t>();
}

const json& array_field(const json& object, const char* name, const std::string& what) {
  const json& value = field(object, name, what);
  if (!value.is_array()) throw Error("journal {} is corrupt: '{}' is not an array", what, name);
  return value;
}

std::vector<std::string> strings_field(const json& object, const char* name,
                                       const std::string& what) {
  std::vector<std::string> out;
  for (const auto& item : array_field(object, name, what)) {
    if (!item.is_string())
      throw Error("journal {} is corrupt: '{}' holds a non-string", what, name);
    out.push_back(item.get<std::string>());
  }
  return out;
}

// Absolute, lexically normal, no trailing '/', no control characters.
bool well_formed_path(const std::string& path) {
  if (path.empty() || path.front() != '/' || path.size() > 4096) return false;
  if (std::any_of(path.begin(), path.end(),
                  [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
    return false;
  }
  return path == normal_absolute(path);
}

bool known_fstype(const std::string& fstype) {
  for (const char* known : {"erofs", "ext4", "tmpfs", "overlay", "virtiofs"}) {
    if (fstype == known) return true;
  }
  return false;
}

}  // namespace

std::string rootfs_refusal(const std::string& rootfs, const std::string& base_dir,
                           const std::string& container_id) {
  if (!well_formed_path(rootfs)) return "not an absolute, normal path";
  if (is_at_or_under(base_dir, rootfs)) return "it holds the shared base directory";
  if (is_at_or_under(rootfs, base_dir) && !is_at_or_under(rootfs, base_dir + "/" + container_id)) {
    return "it is inside the base directory but not in this container's directory";
  }
  return {};
}

std::string journal_dir(const std::string& base_dir) { return base_dir + "/.journals"; }

std::string journal_path(const std::string& base_dir, const std::string& container_id) {
  return journal_dir(base_dir) + "/" + container_id + ".json";
}

json to_json(const Journal& journal) {
  auto loops = json::array();
  for (const auto& loop : journal.loops) {
    loops.push_back({{"device", loop.device},
                     {"backing", loop.backing},
                     {"offset", loop.offset},
                     {"backing_dev", loop.backing_dev},
                     {"backing_ino", loop.backing_ino},
                     {"diskseq", loop.diskseq}});
  }
  auto mounts = json::array();
  for (const auto& mount : journal.mounts) {
    mounts.push_back({{"path", mount.path}, {"id", mount.id}, {"fstype", mount.fstype}});
  }
  return {{"version", kJournalVersion},
          {"container_id", journal.container_id},
          {"base_dir", journal.base_dir},
          {"rootfs", journal.rootfs},
          {"phase", journal.phase},
          {"created_dirs", journal.created_dirs},
          {"mounts", mounts},
          {"loops", loops},
          {"verity_devices", journal.verity_devices}};
}

void save_journal(const Journal& journal) {
  std::string dir = journal_dir(journal.base_dir);
  std::string text = to_json(journal).dump(1) + "\n";
  // Another container's teardown removes the directory when it holds no journal: if that
  // happens between our mkdir and our write, create it again once.
  for (int attempt = 0;; ++attempt) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      throw_errno("cannot create journal directory {}", dir);
    if (!open_journal_dir(dir)) {
      if (errno == ENOENT && attempt == 0) continue;
      throw_errno("cannot open journal directory {}", dir);
    }
    try {
      write_file_atomic(journal_path(journal.base_dir, journal.container_id), text, 0600);
      return;
    } catch (const SystemError& error) {
      if (error.error_number() != ENOENT || attempt > 0) throw;
    }
  }
}

Journal parse_journal(std::string_view text, const std::string& what) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& error) {
    throw_with_context(error, fmt::format("journal {} is corrupt", what));
  }
  if (!root.is_object()) throw Error("journal {} is corrupt: not a JSON object", what);
  uint64_t version = u64_field(root, "version", what);
  if (version != static_cast<uint64_t>(kJournalVersion)) {
    throw Error("journal {} has version {}; this driver reads version {}", what, version,
                kJournalVersion);
  }
  Journal journal;
  journal.container_id = string_field(root, "container_id", what);
  journal.base_dir = string_field(root, "base_dir", what);
  journal.rootfs = string_field(root, "rootfs", what);
  journal.phase = string_field(root, "phase", what);
  journal.created_dirs = strings_field(root, "created_dirs", what);
  for (const auto& mount : array_field(root, "mounts", what)) {
    if (!mount.is_object()) throw Error("journal {} is corrupt: a mount is not an object", what);
    journal.mounts.push_back({string_field(mount, "path", what), u64_field(mount, "id", what),
                              string_field(mount, "fstype", what)});
  }
  for (const auto& loop : array_field(root, "loops", what)) {
    if (!loop.is_object()) throw Error("journal {} is corrupt: a loop is not an object", what);
    journal.loops.push_back(
        {string_field(loop, "device", what), string_field(loop, "backing", what),
         u64_field(loop, "offset", what), u64_field(loop, "backing_dev", what),
         u64_field(loop, "backing_ino", what), u64_field(loop, "diskseq", what)});
  }
  journal.verity_devices = strings_field(root, "verity_devices", what);
  return journal;
}

std::optional<Journal> load_journal(const std::string& base_dir, const std::string& container_id) {
  contract::validate_container_id(container_id);
  std::string path = journal_path(base_dir, container_id);
  // Before journal version 2 a journal was <base>/<id>.journal.json: a container mounted by an
  // older driver must not look like one with nothing recorded (its teardown would leave its
  // rootfs mounted), so such a file stops teardown and mount with a clear error.
  std::string legacy = base_dir + "/" + container_id + ".journal.json";
  struct stat legacy_st {};
  if (::lstat(legacy.c_str(), &legacy_st) == 0 && S_ISREG(legacy_st.st_mode)) {
    throw Error(
        "container {} has a journal of an older erofs-vmdk at {}: tear it down with that "
        "version (or unmount its rootfs and {}/{} by hand), then remove that file",
        container_id, legacy, base_dir, container_id);
  }
  UniqueFd dir = open_journal_dir(journal_dir(base_dir));
  if (!dir) return std::nullopt;
  int raw = ::openat(dir.get(), (container_id + ".json").c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("cannot read journal {}", path);
  }
  UniqueFd fd(raw);
  return parse_journal(read_input_fd(fd.get(), path, "journal", kMaxJournalBytes), path);
}

void remove_journal(const std::string& base_dir, const std::string& container_id) {
  std::string path = journal_path(base_dir, container_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove journal {}", path);
  fsync_directory(journal_dir(base_dir));
  // The last journal gone, the directory goes too (rmdir fails, harmlessly, while another
  // container has one), so a base with nothing mounted holds nothing.
  ::rmdir(journal_dir(base_dir).c_str());
}

namespace {

// Keeps the entries `ours` accepts; every other one is dropped and reported as `refusal` says.
template <typename Entry, typename Ours, typename Refusal>
void keep_only(std::vector<Entry>& entries, Ours ours, Refusal refusal,
               std::vector<std::string>& problems) {
  std::vector<Entry> kept;
  for (const auto& entry : entries) {
    if (ours(entry)) {
      kept.push_back(entry);
    } else {
      problems.push_back(refusal(entry));
    }
  }
  entries = std::move(kept);
}

// The recorded rootfs, when it cannot be this container's (or differs from the one the caller
// expects), is dropped.
void check_recorded_rootfs(Journal& journal, const std::string& base_dir,
                           const std::string& container_id, const std::string& rootfs,
                           std::vector<std::string>& problems) {
  if (journal.rootfs.empty()) return;
  std::string why = rootfs_refusal(journal.rootfs, base_dir, container_id);
  if (why.empty() && !rootfs.empty() && rootfs != journal.rootfs) {
    why = fmt::format("it differs from the rootfs {} given for the teardown", rootfs);
  }
  if (!why.empty()) {
    problems.push_back(fmt::format("journal entry refused: rootfs '{}': {}", journal.rootfs, why));
    journal.rootfs.clear();
  }
}

}  // namespace

std::vector<std::string> validate_journal(Journal& journal, const std::string& base_dir,
                                          const std::string& container_id,
                                          const std::string& rootfs) {
  std::vector<std::string> problems;
  auto refuse_all = [&](const std::string& why) {
    problems.push_back(fmt::format("journal refused: {}; nothing it records is acted on", why));
    journal.rootfs.clear();
    journal.created_dirs.clear();
    journal.mounts.clear();
    journal.loops.clear();
    journal.verity_devices.clear();
  };
  if (journal.container_id != container_id) {
    refuse_all(
        fmt::format("it names container '{}', not '{}'", journal.container_id, container_id));
    return problems;
  }
  if (journal.base_dir != base_dir) {
    refuse_all(fmt::format("it names base directory '{}', not '{}'", journal.base_dir, base_dir));
    return problems;
  }
  check_recorded_rootfs(journal, base_dir, container_id, rootfs, problems);
  std::string container_dir = base_dir + "/" + container_id;
  auto ours = [&](const std::string& path) {
    return well_formed_path(path) && (is_at_or_under(path, container_dir) ||
                                      (!journal.rootfs.empty() && path == journal.rootfs));
  };
  // The rootfs's missing parents are created too; never the base directory or above it.
  auto rootfs_parent = [&](const std::string& dir) {
    return well_formed_path(dir) && !journal.rootfs.empty() && dir != "/" &&
           is_at_or_under(journal.rootfs, dir) && !is_at_or_under(base_dir, dir) &&
           !is_at_or_under(dir, base_dir);
  };
  keep_only(
      journal.created_dirs, [&](const std::string& dir) { return ours(dir) || rootfs_parent(dir); },
      [&](const std::string& dir) {
        return fmt::format(
            "journal entry refused: created directory '{}' is neither in {} nor "
            "the rootfs or one of its parents",
            dir, container_dir);
      },
      problems);
  keep_only(
      journal.mounts,
      [&](const JournalMount& mount) { return ours(mount.path) && known_fstype(mount.fstype); },
      [&](const JournalMount& mount) {
        return fmt::format(
            "journal entry refused: mount '{}' (id {}, {}) is not one this "
            "container makes",
            mount.path, mount.id, mount.fstype);
      },
      problems);
  keep_only(
      journal.loops,
      [&](const JournalLoop& loop) {
        return contract::parse_loop_device_path(loop.device) &&
               (loop.backing_dev != 0 || loop.backing_ino != 0);
      },
      [&](const JournalLoop& loop) {
        return fmt::format(
            "journal entry refused: loop device '{}' (over '{}') has no valid "
            "/dev/loopN name or backing identity",
            loop.device, loop.backing);
      },
      problems);
  keep_only(
      journal.verity_devices,
      [&](const std::string& name) {
        return contract::parse_verity_device_name(name, container_id).has_value();
      },
      [&](const std::string& name) {
        return fmt::format(
            "journal entry refused: device-mapper name '{}' does not have this "
            "container's prefix {}",
            name, verity_name_prefix(container_id));
      },
      problems);
  return problems;
}

}  // namespace evmdk::guest
