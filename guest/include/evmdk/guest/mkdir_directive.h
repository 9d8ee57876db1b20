#pragma once
// mkdir directives (`X-kata.mkdir.path=` / `X-containerd.mkdir.path=`):
// `{{ mount N }}/path:mode[:uid:gid]`. `{{ mount 0 }}` is the upper's root, `{{ mount N }}`
// (N >= 1) is lower-(N-1). Paths are resolved beneath the mount's root and never through a
// symlink that leaves it.
#include <sys/types.h>

#include <cstddef>
#include <limits>
#include <optional>
#include <string>

namespace evmdk::guest {

struct MkdirDirective {
  unsigned mount_index = 0;  // N of {{ mount N }}
  std::string path;          // relative to the mount root, no "." / ".." components
  mode_t mode = 0755;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

// Parses one directive; throws an Error quoting it when malformed or when N is not below
// `mount_count` (by default only the type bounds it and the caller checks N against its list).
// The template is parsed by the shared contract::parse_leading_mount.
MkdirDirective parse_mkdir_directive(const std::string& spec,
                                     size_t mount_count = std::numeric_limits<size_t>::max());

// Creates directive.path under `root` (the mount root), like mkdir -p. Components it creates
// get `mode` (exactly, ignoring umask) and the uid/gid when given. Resolution uses
// openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); a symlink pointing outside the root is
// refused with an Error naming the directive.
void apply_mkdir_directive(const std::string& root, const MkdirDirective& directive,
                           const std::string& spec_for_errors);

}  // namespace evmdk::guest
