#include "evmdk/guest/safe_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "evmdk/error.h"

namespace evmdk::guest {

std::string normal_absolute(const std::string& path) {
  if (path.empty()) return path;
  std::string out = std::filesystem::absolute(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool is_at_or_under(const std::string& path, const std::string& dir) {
  if (dir == "/") return !path.empty() && path.front() == '/';
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

UniqueFd open_nofollow(const std::string& path, bool directory) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW | (directory ? O_DIRECTORY : 0);
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how);
  return UniqueFd(fd < 0 ? -1 : static_cast<int>(fd));
}

std::optional<uint64_t> mount_id_nofollow(const std::string& path) {
  UniqueFd fd = open_nofollow(path);
  if (!fd) return std::nullopt;
  struct statx st {};
  if (::statx(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &st) != 0)
    return std::nullopt;
  if ((st.stx_mask & STATX_MNT_ID) == 0) {
    errno = ENOSYS;
    return std::nullopt;
  }
  return st.stx_mnt_id;
}

void make_dirs_nofollow(const std::string& path, mode_t mode, const std::string& what,
                        const std::function<void(const std::string&)>& on_created) {
  if (path.empty() || path.front() != '/')
    throw Error("{}: {} is not an absolute path", what, path);
  std::string current;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    std::string name = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (name.empty()) continue;
    std::string parent_path = current.empty() ? "/" : current;
    std::string full = current + "/" + name;
    UniqueFd parent = open_nofollow(parent_path, true);
    if (!parent) throw_errno("{}: cannot reach {} without following a symlink", what, parent_path);
    current = full;
    if (::mkdirat(parent.get(), name.c_str(), mode) == 0) {
      if (on_created) on_created(full);
      continue;
    }
    if (errno != EEXIST) throw_errno("{}: cannot create directory {}", what, full);
    struct stat st {};
    if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      throw_errno("{}: cannot inspect {}", what, full);
    }
    if (S_ISLNK(st.st_mode)) {
      throw Error(
          "{}: {} is a symlink; the driver does not follow symlinks in the paths it "
          "mounts on",
          what, full);
    }
    if (!S_ISDIR(st.st_mode)) throw Error("{}: {} exists and is not a directory", what, full);
  }
}

int rmdir_nofollow(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos || path == "/") return EINVAL;
  std::string parent_path = slash == 0 ? "/" : path.substr(0, slash);
  std::string name = path.substr(slash + 1);
  // Not O_PATH: unlinkat needs a real directory descriptor.
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, AT_FDCWD, parent_path.c_str(), &how, sizeof how);
  if (fd < 0) return errno;
  UniqueFd parent(static_cast<int>(fd));
  if (::unlinkat(parent.get(), name.c_str(), AT_REMOVEDIR) != 0) return errno;
  return 0;
}

}  // namespace evmdk::guest
