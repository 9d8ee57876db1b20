#pragma once
// Private to the driver: the rootfs step (overlay, bind, virtio-fs), and the mount error text
// the steps share.
#include <string>
#include <vector>

#include "evmdk/guest/plan.h"
#include "evmdk/storage_spec.h"

namespace evmdk::guest::detail {

// "cannot mount <what> <source> at <target> (options <data>): <strerror(errno)>"
std::string mount_error(const std::string& what, const std::string& source,
                        const std::string& target, const std::string& data);

// The overlay of lower-0..lower-(lowers-1) (and upper/upper, upper/work when `with_upper`)
// under `layer_dir` at `rootfs`; returns the method used ("fsconfig lowerdir+" or
// "mount(2) relative paths").
std::string mount_overlay(const std::string& layer_dir, const std::string& rootfs, size_t lowers,
                          const std::vector<std::string>& extra, bool with_upper,
                          bool try_lowerdir_plus);

// A bind of `source_fd` (an O_PATH directory) at the rootfs, read-only before it is attached
// when asked.
void bind_rootfs(int source_fd, const std::string& rootfs, bool read_only, const std::string& what);

// The virtio-fs share at the rootfs.
void mount_virtiofs(const Storage& share, const MountOptions& options, const std::string& rootfs,
                    bool read_only);

}  // namespace evmdk::guest::detail
