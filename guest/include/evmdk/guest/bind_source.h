#pragma once
// The source of a bind-mounted rootfs (`X-erofs-vmdk.rootfs-bind=SPEC`): `{{ mount N }}` (the
// root of mount N: 0 = the upper, N >= 1 = lower-(N-1)) or `{{ mount 0 }}/relative/path` (a
// directory inside the upper). Nothing else is accepted: no host paths, no other templates, no
// `..`. The path is resolved beneath the mount's root; a symlink leading out of it is refused.
#include <cstddef>
#include <limits>
#include <string>

#include "evmdk/unique_fd.h"

namespace evmdk::guest {

struct BindSource {
  unsigned mount_index = 0;  // N of {{ mount N }}
  std::string path;          // relative to the mount root, normalised; empty = the root itself
};

// Throws an Error quoting `spec` when it is not one of the two accepted forms, or when N is not
// below `mount_count` (the guest's mounts: the upper plus the lowers; by default only the type
// bounds it and the caller checks N against its own list). Parsed by the shared
// contract::parse_leading_mount (common/include/evmdk/contract/mount_template.h).
BindSource parse_bind_source(const std::string& spec,
                             size_t mount_count = std::numeric_limits<size_t>::max());

// An O_PATH descriptor of the source directory below `root` (the mount's root), resolved with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): a symlink out of the root
// or a path crossing into another mount is refused with an Error naming `spec`.
UniqueFd open_bind_source(const std::string& root, const BindSource& source,
                          const std::string& spec);

}  // namespace evmdk::guest
