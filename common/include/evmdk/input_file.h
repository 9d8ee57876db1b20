#pragma once
// Opening files named by untrusted input (layers, device blobs, descriptor extents, journals,
// state files) without ever blocking or reading something other than what was meant:
// O_NONBLOCK so a FIFO cannot hang the open, O_NOCTTY so a tty cannot become ours, then
// fstat and a file-type check before the first read.
#include <sys/stat.h>

#include <cstddef>
#include <string>

#include "evmdk/unique_fd.h"

namespace evmdk {

enum class InputKind {
  RegularFile,          // only regular files
  RegularOrBlockDevice  // also block devices (only where an option explicitly allows them)
};

struct InputFile {
  UniqueFd fd;
  struct stat st {};
  // The file actually opened, with every symlink resolved (readlink of /proc/self/fd/N):
  // record this, not the name given, so a retargeted link cannot swap the file later.
  std::string resolved_path;
};

// Opens `path` read-only. `what` names it in errors ("layer 2", "device= blob", ...). Throws
// an Error naming the path and its type when it is not of an accepted kind.
// follow_symlinks=false refuses a symlink as the last component (O_NOFOLLOW).
InputFile open_input_file(const std::string& path, const std::string& what,
                          InputKind kind = InputKind::RegularFile, bool follow_symlinks = true);

// The whole of a small untrusted file (state, layout, policy, journal, sidecar...), opened with
// open_input_file (regular files only) and never more than `max_bytes`: a file whose size is
// above it is refused before anything is read, and one that grows past it while being read is
// refused too. Throws evmdk::Error "<what> <path>: <size> bytes, more than the <max_bytes>
// allowed" for a file too large, and open_input_file's errors otherwise (a SystemError for a
// failed open or read, errno kept).
std::string read_input_file(const std::string& path, const std::string& what, size_t max_bytes,
                            bool follow_symlinks = true);

// The same for a file the caller opened itself (e.g. with openat below a trusted directory
// fd): checks it is a regular file first ("<what> <path>: is a <type>, not a regular file").
std::string read_input_fd(int fd, const std::string& path, const std::string& what,
                          size_t max_bytes);

// "regular file", "directory", "FIFO", "socket", "character device", "block device",
// "symlink" or "unknown file type", for error messages.
const char* file_type_name(mode_t mode);

}  // namespace evmdk
