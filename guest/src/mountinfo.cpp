#include "evmdk/guest/mountinfo.h"

#include <libmount.h>

#include <memory>

#include "evmdk/error.h"
#include "evmdk/guest/safe_path.h"

namespace evmdk::guest {
namespace {

struct TableDeleter {
  void operator()(libmnt_table* table) const { mnt_unref_table(table); }
};
struct IterDeleter {
  void operator()(libmnt_iter* iter) const { mnt_free_iter(iter); }
};

std::string or_empty(const char* text) { return text != nullptr ? text : ""; }

}  // namespace

// libmount parses the kernel's mountinfo (and unescapes its \ooo sequences); the table keeps
// the kernel's order, parents before children.
std::vector<MountEntry> read_mountinfo() {
  const char* path = "/proc/self/mountinfo";
  std::unique_ptr<libmnt_table, TableDeleter> table(mnt_new_table());
  if (!table) throw Error("libmount: cannot allocate a mount table");
  int rc = mnt_table_parse_file(table.get(), path);
  if (rc != 0) {
    throw_errno_message(rc < 0 ? -rc : EINVAL,
                        fmt::format("cannot read {} (is /proc mounted?)", path));
  }
  std::unique_ptr<libmnt_iter, IterDeleter> iter(mnt_new_iter(MNT_ITER_FORWARD));
  if (!iter) throw Error("libmount: cannot allocate an iterator");
  std::vector<MountEntry> out;
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(table.get(), iter.get(), &fs) == 0) {
    MountEntry entry;
    entry.id = mnt_fs_get_id(fs);
    entry.parent_id = mnt_fs_get_parent_id(fs);
    entry.mount_point = or_empty(mnt_fs_get_target(fs));
    entry.fstype = or_empty(mnt_fs_get_fstype(fs));
    entry.source = or_empty(mnt_fs_get_source(fs));
    entry.super_options = or_empty(mnt_fs_get_fs_options(fs));
    out.push_back(std::move(entry));
  }
  return out;
}

std::vector<MountEntry> mounts_under(const std::string& dir) {
  std::vector<MountEntry> out;
  for (auto& entry : read_mountinfo()) {
    if (is_at_or_under(entry.mount_point, dir)) out.push_back(std::move(entry));
  }
  return out;
}

bool is_mount_point(const std::string& path) {
  for (const auto& entry : read_mountinfo()) {
    if (entry.mount_point == path) return true;
  }
  return false;
}

}  // namespace evmdk::guest
