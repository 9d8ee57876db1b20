#include "evmdk/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
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
  // O_PATH first: nothing is really opened (a watchdog, a tape or a FIFO has no open side
  // effect) until the type is known; then the checked inode is reopened through the same fd.
  int path_flags = O_PATH | O_CLOEXEC | (follow_symlinks ? 0 : O_NOFOLLOW);
  UniqueFd handle(::open(path.c_str(), path_flags));
  if (!handle) throw_errno("{} {}: cannot open", what, path);
  InputFile file;
  if (::fstat(handle.get(), &file.st) != 0) throw_errno("{} {}: cannot stat", what, path);
  if (S_ISLNK(file.st.st_mode)) {
    throw Error("{} {}: is a symlink, which is not followed here", what, path);
  }
  bool regular = S_ISREG(file.st.st_mode);
  bool block = S_ISBLK(file.st.st_mode);
  if (!regular && !(block && kind == InputKind::RegularOrBlockDevice)) {
    throw Error("{} {}: is a {}, not a regular file{}", what, path, file_type_name(file.st.st_mode),
                kind == InputKind::RegularOrBlockDevice ? " or block device" : "");
  }
  char reopen[64];
  std::snprintf(reopen, sizeof reopen, "/proc/self/fd/%d", handle.get());
  file.fd.reset(::open(reopen, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!file.fd) throw_errno("{} {}: cannot open", what, path);
  struct stat opened {};
  if (::fstat(file.fd.get(), &opened) != 0 || opened.st_dev != file.st.st_dev ||
      opened.st_ino != file.st.st_ino) {
    throw Error("{} {}: changed while it was being opened", what, path);
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

std::string read_input_fd(int fd, const std::string& path, const std::string& what,
                          size_t max_bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("{} {}: cannot stat", what, path);
  if (!S_ISREG(st.st_mode)) {
    throw Error("{} {}: is a {}, not a regular file", what, path, file_type_name(st.st_mode));
  }
  auto too_large = [&](uint64_t size) {
    return Error("{} {}: {} bytes, more than the {} allowed", what, path, size, max_bytes);
  };
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) throw too_large(size);
  // Read to the end (the size may change under us), one byte past the limit at most.
  std::string text(static_cast<size_t>(size) + 1, '\0');
  size_t done = 0;
  while (true) {
    if (done == text.size()) {
      if (text.size() > max_bytes) throw too_large(text.size());
      text.resize(std::min<size_t>(max_bytes + 1, text.size() * 2));
    }
    ssize_t n = ::pread(fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("{} {}: cannot read", what, path);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes) throw too_large(done);
  text.resize(done);
  return text;
}

std::string read_input_file(const std::string& path, const std::string& what, size_t max_bytes,
                            bool follow_symlinks) {
  InputFile file = open_input_file(path, what, InputKind::RegularFile, follow_symlinks);
  return read_input_fd(file.fd.get(), path, what, max_bytes);
}

}  // namespace evmdk
