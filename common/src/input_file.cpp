#include "evmdk/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "evmdk/error.h"

namespace evmdk {

const char* file_type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFIFO: return "FIFO";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFLNK: return "symlink";
    default: return "unknown file type";
  }
}

InputFile open_input_file(const std::string& path, const std::string& what, InputKind kind,
                          bool follow_symlinks) {
  int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (follow_symlinks ? 0 : O_NOFOLLOW);
  InputFile file;
  file.fd.reset(::open(path.c_str(), flags));
  if (!file.fd) {
    if (errno == ELOOP && !follow_symlinks) {
      throw SystemError(errno, fmt::format("{} {}: is a symlink, which is not followed here", what, path));
    }
    throw_errno("{} {}: cannot open", what, path);
  }
  if (::fstat(file.fd.get(), &file.st) != 0) throw_errno("{} {}: cannot stat", what, path);
  bool regular = S_ISREG(file.st.st_mode);
  bool block = S_ISBLK(file.st.st_mode);
  if (!regular && !(block && kind == InputKind::RegularOrBlockDevice)) {
    throw Error("{} {}: is a {}, not a regular file{}", what, path, file_type_name(file.st.st_mode),
                kind == InputKind::RegularOrBlockDevice ? " or block device" : "");
  }
  // Reads should block normally from here on (O_NONBLOCK only guarded the open itself).
  int fl = ::fcntl(file.fd.get(), F_GETFL);
  if (fl >= 0) (void)::fcntl(file.fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", file.fd.get());
  std::string resolved(4096, '\0');
  ssize_t n = ::readlink(link, resolved.data(), resolved.size());
  if (n <= 0 || static_cast<size_t>(n) >= resolved.size()) {
    throw_errno("{} {}: cannot resolve the opened file's path", what, path);
  }
  resolved.resize(static_cast<size_t>(n));
  file.resolved_path = std::move(resolved);
  return file;
}

}  // namespace evmdk
