#include "evmdk/guest/bind_source.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"

namespace evmdk::guest {

BindSource parse_bind_source(const std::string& spec, size_t mount_count) {
  // mount_index is an unsigned: bound N by that too.
  const size_t bound =
      std::min<size_t>(mount_count, size_t{std::numeric_limits<unsigned>::max()} + 1);
  contract::BindSpec parsed = contract::parse_bind_spec(spec, bound);
  return BindSource{static_cast<unsigned>(parsed.mount_index), std::move(parsed.path)};
}

UniqueFd open_bind_source(const std::string& root, const BindSource& source,
                          const std::string& spec) {
  UniqueFd root_fd = open_or_throw(root, O_PATH | O_DIRECTORY);
  if (source.path.empty()) return root_fd;
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  UniqueFd fd(static_cast<int>(
      ::syscall(SYS_openat2, root_fd.get(), source.path.c_str(), &how, sizeof how)));
  if (fd) return fd;
  if (errno == EXDEV || errno == ELOOP) {
    throw Error("rootfs bind source '{}': {}/{} resolves outside {} (symlink escape refused)", spec,
                root, source.path, root);
  }
  throw Error("rootfs bind source '{}': cannot open {}/{}: {}", spec, root, source.path,
              std::strerror(errno));
}

}  // namespace evmdk::guest
