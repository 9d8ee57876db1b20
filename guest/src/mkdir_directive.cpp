#include "evmdk/guest/mkdir_directive.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <limits>
#include <vector>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest {
namespace {

template <typename T>
bool parse_number(const std::string& text, T& out, int base = 10) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return ec == std::errc() && end == text.data() + text.size();
}

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
  // The host emits canonical templates; mount_index is an unsigned.
  const size_t bound = std::min<size_t>(mount_count, size_t{std::numeric_limits<unsigned>::max()} + 1);
  auto lead = contract::parse_leading_mount(spec, bound, "mkdir directive",
                                            contract::TemplateSyntax::Canonical);
  MkdirDirective out;
  out.mount_index = static_cast<unsigned>(lead.index);
  auto fields = split(lead.rest, ':');
  if (fields.size() != 2 && fields.size() != 4) {
    throw Error("mkdir directive '{}': expected {{{{ mount N }}}}/path:mode[:uid:gid]", spec);
  }
  std::string path = fields[0];
  if (path.empty() || path[0] != '/') {
    throw Error("mkdir directive '{}': path must start with '/' after the template", spec);
  }
  std::string normal;
  for (const auto& component : split(path.substr(1), '/')) {
    if (component.empty() || component == ".") continue;
    if (component == "..") throw Error("mkdir directive '{}': '..' is not allowed", spec);
    normal += (normal.empty() ? "" : "/") + component;
  }
  if (normal.empty()) throw Error("mkdir directive '{}': names the mount root itself", spec);
  out.path = normal;
  unsigned mode = 0;
  if (!parse_number(fields[1], mode, 8) || mode > 07777) {
    throw Error("mkdir directive '{}': mode '{}' is not an octal mode", spec, fields[1]);
  }
  out.mode = static_cast<mode_t>(mode);
  if (fields.size() == 4) {
    uid_t uid = 0;
    gid_t gid = 0;
    if (!parse_number(fields[2], uid) || !parse_number(fields[3], gid)) {
      throw Error("mkdir directive '{}': uid/gid must be numbers", spec);
    }
    out.uid = uid;
    out.gid = gid;
  }
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
        throw Error("mkdir directive '{}': '{}' resolves outside {} (symlink escape refused)",
                    spec, prefix, root);
      }
      throw_errno("mkdir directive '{}': cannot open {}/{}", spec, root, prefix);
    }
    prefix += (prefix.empty() ? "" : "/") + component;
    bool created = ::mkdirat(parent.get(), component.c_str(), directive.mode) == 0;
    if (!created && errno != EEXIST) throw_errno("mkdir directive '{}': cannot create {}/{}", spec, root, prefix);
    UniqueFd dir(open_beneath(root_fd.get(), prefix));
    if (!dir) {
      if (errno == EXDEV || errno == ELOOP) {
        throw Error("mkdir directive '{}': '{}' resolves outside {} (symlink escape refused)",
                    spec, prefix, root);
      }
      throw_errno("mkdir directive '{}': {}/{} is not a usable directory", spec, root, prefix);
    }
    if (created) {
      // Exact mode despite the umask; O_PATH fds cannot fchmod, so go through the parent.
      if (::fchmodat(parent.get(), component.c_str(), directive.mode, 0) != 0) {
        throw_errno("mkdir directive '{}': cannot chmod {}/{}", spec, root, prefix);
      }
      if (directive.uid &&
          ::fchownat(parent.get(), component.c_str(), *directive.uid, *directive.gid, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno("mkdir directive '{}': cannot chown {}/{}", spec, root, prefix);
      }
    }
  }
}

}  // namespace evmdk::guest
