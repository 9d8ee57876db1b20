#include "evmdk/guest/mkdir_directive.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <vector>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest {
namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t pos = text.find(separator, start);
    parts.push_back(text.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) return parts;
    start = pos + 1;
  }
}

// openat2 beneath `root_fd`; no glibc wrapper in Debian 12.
int open_beneath(int root_fd, const std::string& path) {
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how));
}

}  // namespace

MkdirDirective parse_mkdir_directive(const std::string& spec, size_t mount_count) {
  // mount_index is an unsigned: bound N by that too.
  const size_t bound =
      std::min<size_t>(mount_count, size_t{std::numeric_limits<unsigned>::max()} + 1);
  contract::MkdirSpec parsed = contract::parse_mkdir_spec(spec, bound);
  MkdirDirective out;
  out.mount_index = static_cast<unsigned>(parsed.mount_index);
  out.path = std::move(parsed.path);
  out.mode = static_cast<mode_t>(parsed.mode);
  if (parsed.uid) out.uid = static_cast<uid_t>(*parsed.uid);
  if (parsed.gid) out.gid = static_cast<gid_t>(*parsed.gid);
  return out;
}

void apply_mkdir_directive(const std::string& root, const MkdirDirective& directive,
                           const std::string& spec) {
  UniqueFd root_fd = open_or_throw(root, O_PATH | O_DIRECTORY);
  std::string prefix;
  for (const auto& component : split(directive.path, '/')) {
    UniqueFd parent(prefix.empty() ? ::dup(root_fd.get()) : open_beneath(root_fd.get(), prefix));
    if (!parent) {
      if (errno == EXDEV || errno == ELOOP) {
        throw Error("mkdir directive '{}': '{}' resolves outside {} (symlink escape refused)", spec,
                    prefix, root);
      }
      throw_errno("mkdir directive '{}': cannot open {}/{}", spec, root, prefix);
    }
    prefix += (prefix.empty() ? "" : "/") + component;
    bool created = ::mkdirat(parent.get(), component.c_str(), directive.mode) == 0;
    if (!created && errno == EROFS) {
      // A read-only lower or a read-only upper (a read-only view) cannot gain a directory.
      throw Error(
          "mkdir directive '{}': {}/{} does not exist and cannot be created: the mount is "
          "read-only (its image must already hold the directory)",
          spec, root, prefix);
    }
    if (!created && errno != EEXIST)
      throw_errno("mkdir directive '{}': cannot create {}/{}", spec, root, prefix);
    UniqueFd dir(open_beneath(root_fd.get(), prefix));
    if (!dir) {
      if (errno == EXDEV || errno == ELOOP) {
        throw Error("mkdir directive '{}': '{}' resolves outside {} (symlink escape refused)", spec,
                    prefix, root);
      }
      throw_errno("mkdir directive '{}': {}/{} is not a usable directory", spec, root, prefix);
    }
    if (created) {
      // Exact mode despite the umask; O_PATH fds cannot fchmod, so go through the parent.
      if (::fchmodat(parent.get(), component.c_str(), directive.mode, 0) != 0) {
        throw_errno("mkdir directive '{}': cannot chmod {}/{}", spec, root, prefix);
      }
      if (directive.uid && ::fchownat(parent.get(), component.c_str(), *directive.uid,
                                      *directive.gid, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno("mkdir directive '{}': cannot chown {}/{}", spec, root, prefix);
      }
    }
  }
}

}  // namespace evmdk::guest
