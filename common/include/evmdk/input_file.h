#pragma once
// Opening files named by untrusted input (layers, device blobs, descriptor extents, journals,
// state files) without ever blocking or reading something other than what was meant:
// O_NONBLOCK so a FIFO cannot hang the open, O_NOCTTY so a tty cannot become ours, then
// fstat and a file-type check before the first read.
#include <sys/stat.h>

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

// "regular file", "directory", "FIFO", "socket", "character device", "block device",
// "symlink" or "unknown file type", for error messages.
const char* file_type_name(mode_t mode);

}  // namespace evmdk
