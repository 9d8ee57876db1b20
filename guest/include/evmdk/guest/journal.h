#pragma once
// What a mount created, written atomically before (for mounts) or right after (for directories,
// loop devices and mount ids) each step, so a restarted agent's teardown can finish the job
// after a crash. Journals live in a root-only directory, <base>/.journals/<id>.json (no
// container id starts with '.', so it never collides with a container's directory).
//
// The journal is input too: whoever can edit it must not be able to make teardown unmount,
// detach or remove anything this container did not make. validate_journal() checks every entry
// against the container's base directory, the rootfs recorded at mount time and this
// container's device-mapper prefix, and drops (reporting) every entry that fails.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/contract/dm_names.h"

namespace evmdk::guest {

inline constexpr int kJournalVersion = 2;
inline constexpr size_t kMaxJournalBytes = 4 << 20;

struct JournalLoop {
  std::string device;   // /dev/loopN
  std::string backing;  // what it maps (for messages)
  uint64_t offset = 0;
  // Identity of the attachment: the backing file's st_dev/st_ino as the loop driver reports
  // them, and the loop device's diskseq (0 when the kernel has none), which changes with every
  // attach, so a device re-used by someone else is never detached.
  uint64_t backing_dev = 0;
  uint64_t backing_ino = 0;
  uint64_t diskseq = 0;
};

struct JournalMount {
  std::string path;    // mount point when it was made
  uint64_t id = 0;     // statx STATX_MNT_ID once made; 0 = journaled before it was made
  std::string fstype;  // erofs, ext4, tmpfs, overlay, virtiofs (a bind: its source's type)
};

struct Journal {
  std::string container_id;
  std::string base_dir;
  std::string rootfs;
  std::string phase;                      // mounting, mounted, tearing-down
  std::vector<std::string> created_dirs;  // in creation order; removed in reverse, if empty
  std::vector<JournalMount> mounts;       // in mount order: lowers, upper, rootfs
  std::vector<JournalLoop> loops;
  std::vector<std::string> verity_devices;  // dm names
};

std::string journal_dir(const std::string& base_dir);
std::string journal_path(const std::string& base_dir, const std::string& container_id);
// Atomic; creates the journal directory (0700) when missing, refuses one that is not root-only.
void save_journal(const Journal& journal);
// nullopt when there is none. Throws evmdk::Error for an unreadable or structurally corrupt
// journal, or a journal directory others can write to or that is a symlink.
std::optional<Journal> load_journal(const std::string& base_dir, const std::string& container_id);
void remove_journal(const std::string& base_dir, const std::string& container_id);
nlohmann::json to_json(const Journal& journal);

// Parses journal text (strict types; `what` names it in errors). No semantic checks.
Journal parse_journal(std::string_view text, const std::string& what);

// Drops every entry of `journal` that this container (`container_id` under normal, absolute
// `base_dir`) cannot have made, and returns one message per dropped entry. `rootfs` is the
// rootfs the caller expects (empty: trust the recorded one if it is well formed). A journal of
// another container or base is emptied altogether.
std::vector<std::string> validate_journal(Journal& journal, const std::string& base_dir,
                                          const std::string& container_id,
                                          const std::string& rootfs);

// Why `rootfs` (normal, absolute) cannot be this container's rootfs ("" when it can): not a
// normal absolute path, the base directory or one of its parents, or inside the base directory
// but outside this container's own directory.
std::string rootfs_refusal(const std::string& rootfs, const std::string& base_dir,
                           const std::string& container_id);

// The lo_file_name this container's loop devices carry ("evmdk:<id>", cut to 63 bytes) and
// the device-mapper name prefix of its verity devices ("evmdk-<id>-lower-"): built and parsed
// in contract/dm_names.h.
using contract::loop_tag;
using contract::verity_name_prefix;

}  // namespace evmdk::guest
