#pragma once
// Paths the driver acts on as root are resolved without following symlinks (openat2
// RESOLVE_NO_SYMLINKS), and mounts are identified by their mount id (statx STATX_MNT_ID), so a
// directory swapped for a symlink can never redirect a mount, an unmount or an rmdir to
// somewhere else (docs/guest.md "Threat model").
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "evmdk/unique_fd.h"

namespace evmdk::guest {

// `path` made absolute (against the cwd) and lexically normal, without trailing '/': never
// resolved through the filesystem, so a symlink in it stays visible to the checks below.
std::string normal_absolute(const std::string& path);

// Whether `path` is `dir` or below it (both normal, absolute).
bool is_at_or_under(const std::string& path, const std::string& dir);

// O_PATH descriptor of absolute `path`, resolved from "/" without following any symlink (and
// no magic links). Invalid fd with errno set (ELOOP: a component is a symlink) on failure.
UniqueFd open_nofollow(const std::string& path, bool directory = false);

// The mount id (statx STATX_MNT_ID) of the topmost mount `path` is on, resolved without
// symlinks; nullopt with errno set when it cannot be resolved that way.
std::optional<uint64_t> mount_id_nofollow(const std::string& path);

// mkdir -p of absolute `path` without following symlinks: every existing component must be a
// real directory (a symlink anywhere is refused, naming it). `on_created` is called with each
// directory it creates, in order. Throws evmdk::Error naming `what` and the component.
void make_dirs_nofollow(const std::string& path, mode_t mode, const std::string& what,
                        const std::function<void(const std::string&)>& on_created);

// Removes empty directory `path` (rmdir) whose parent is reached without symlinks. Returns 0
// or the errno (ELOOP when the way there goes through a symlink, ENOTDIR when `path` itself is
// one).
int rmdir_nofollow(const std::string& path);

}  // namespace evmdk::guest
