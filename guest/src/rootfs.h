#pragma once
// Private to the driver: the rootfs step (overlay, bind, virtio-fs; docs/guest.md "Rootfs
// shapes"), and the mount error text the steps share.
#include <string>

#include "evmdk/guest/driver.h"
#include "evmdk/guest/plan.h"
#include "mount_session.h"

namespace evmdk::guest::detail {

// "cannot mount <what> <source> at <target> (options <data>): <strerror(errno)>"
std::string mount_error(const std::string& what, const std::string& source,
                        const std::string& target, const std::string& data);

// What the rootfs mount's filesystem type will be in mountinfo.
std::string rootfs_fstype(const Plan& plan);

// Mounts the rootfs the plan describes at paths.rootfs, from the lowers and upper already
// mounted, and records in `result` how (overlay_method, bind_source, virtiofs_tag).
// `try_lowerdir_plus`: an overlay tries fsconfig lowerdir+ before one page of mount(2) data.
void mount_rootfs_shape(const Plan& plan, const ContainerPaths& paths, bool try_lowerdir_plus,
                        MountResult& result);

}  // namespace evmdk::guest::detail
