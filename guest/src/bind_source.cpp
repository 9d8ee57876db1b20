#include "evmdk/guest/bind_source.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <limits>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"

namespace evmdk::guest {

BindSource parse_bind_source(const std::string& spec, size_t mount_count) {
  auto refuse = [&](std::string_view why) {
    return Error("rootfs bind source '{}': {} (only '{{{{ mount N }}}}' or "
                 "'{{{{ mount 0 }}}}/<path inside the upper>' are accepted)", spec, why);
  };
  if (auto nul = spec.find('\0'); nul != std::string::npos) {
    // Quoted only up to the NUL: an error message is a C string.
    throw Error("rootfs bind source '{}\\0...': NUL byte in the template", spec.substr(0, nul));
  }
  // The host emits canonical templates; mount_index is an unsigned.
  const size_t bound = std::min<size_t>(mount_count, size_t{std::numeric_limits<unsigned>::max()} + 1);
  auto lead = contract::parse_leading_mount(spec, bound, "rootfs bind source",
                                            contract::TemplateSyntax::Canonical);
  BindSource out;
  out.mount_index = static_cast<unsigned>(lead.index);
  const std::string& rest = lead.rest;
  if (rest.empty()) return out;
  if (out.mount_index != 0) throw refuse("a path is only allowed below the upper, {{ mount 0 }}");
  if (rest[0] != '/') throw refuse("expected '/' after the template");
  size_t start = 1;
  while (start <= rest.size()) {
    size_t slash = rest.find('/', start);
    std::string component = rest.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (component == "..") throw refuse("'..' is not allowed");
    if (!component.empty() && component != ".") out.path += (out.path.empty() ? "" : "/") + component;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (out.path.empty()) throw refuse("the path names the upper's root; use '{{ mount 0 }}' alone");
  return out;
}

UniqueFd open_bind_source(const std::string& root, const BindSource& source, const std::string& spec) {
  UniqueFd root_fd = open_or_throw(root, O_PATH | O_DIRECTORY);
  if (source.path.empty()) return root_fd;
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd.get(), source.path.c_str(), &how, sizeof how)));
  if (fd) return fd;
  if (errno == EXDEV || errno == ELOOP) {
    throw Error("rootfs bind source '{}': {}/{} resolves outside {} (symlink escape refused)", spec,
                root, source.path, root);
  }
  throw Error("rootfs bind source '{}': cannot open {}/{}: {}", spec, root, source.path, std::strerror(errno));
}

}  // namespace evmdk::guest
