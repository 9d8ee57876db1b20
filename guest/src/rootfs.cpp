// The rootfs step: an overlay of the mounted layers, a bind of one of them, or a virtio-fs
// share (docs/guest.md "Rootfs shapes").
#include "rootfs.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "evmdk/error.h"
#include "evmdk/guest/bind_source.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest::detail {

std::string mount_error(const std::string& what, const std::string& source,
                        const std::string& target, const std::string& data) {
  return fmt::format("cannot mount {} {} at {}{}: {}", what, source, target,
                     data.empty() ? "" : " (options " + data + ")", std::strerror(errno));
}

namespace {

// ---------------------------------------------------------------------------------------
// Overlay. Paths are given relative to multi-layer/ from a thread with its own cwd
// (unshare(CLONE_FS)), so 250 lowers fit even in one page of legacy mount data, and no other
// thread's cwd changes.

// Throws when the kernel refuses; before 6.8 it does not know lowerdir+ (6.1's overlayfs
// is not on the new mount API at all: fsconfig buffers the strings and CMD_CREATE fails).
std::string overlay_with_fsconfig(const std::string& rootfs, size_t lowers,
                                  const std::vector<std::string>& extra, bool with_upper) {
  UniqueFd fs_fd(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs_fd) throw_errno("fsopen(overlay)");
  auto kernel_log = [&] {
    std::string messages;
    char buffer[512];
    ssize_t n;
    while ((n = ::read(fs_fd.get(), buffer, sizeof buffer - 1)) > 0) {
      buffer[n] = 0;
      messages += std::string(" [") + buffer + "]";
    }
    return messages;
  };
  auto set = [&](const std::string& key, const std::string& value) {
    if (::fsconfig(fs_fd.get(), FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0) != 0) {
      throw_errno("overlay option {}={}{}", key, value, kernel_log());
    }
  };
  for (size_t i = 0; i < lowers; ++i) set("lowerdir+", fmt::format("lower-{}", i));
  if (with_upper) {
    set("upperdir", "upper/upper");
    set("workdir", "upper/work");
  }
  for (const auto& option : extra) {
    auto eq = option.find('=');
    if (eq == std::string::npos) {
      if (::fsconfig(fs_fd.get(), FSCONFIG_SET_FLAG, option.c_str(), nullptr, 0) != 0) {
        throw_errno("overlay option {}{}", option, kernel_log());
      }
    } else {
      set(option.substr(0, eq), option.substr(eq + 1));
    }
  }
  if (::fsconfig(fs_fd.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    throw_errno("cannot create the overlay{}", kernel_log());
  }
  UniqueFd mount_fd(::fsmount(fs_fd.get(), FSMOUNT_CLOEXEC, with_upper ? 0 : MOUNT_ATTR_RDONLY));
  if (!mount_fd) throw_errno("fsmount(overlay){}", kernel_log());
  if (::move_mount(mount_fd.get(), "", AT_FDCWD, rootfs.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    throw_errno("cannot attach the overlay at {}", rootfs);
  }
  return "fsconfig lowerdir+";
}

std::string overlay_with_mount_data(const std::string& rootfs, size_t lowers,
                                    const std::vector<std::string>& extra, bool with_upper) {
  std::string data = with_upper ? "upperdir=upper/upper,workdir=upper/work,lowerdir=" : "lowerdir=";
  for (size_t i = 0; i < lowers; ++i) data += fmt::format("{}lower-{}", i ? ":" : "", i);
  for (const auto& option : extra) data += "," + option;
  long page = ::sysconf(_SC_PAGESIZE);
  if (data.size() >= static_cast<size_t>(page)) {
    throw Error(
        "overlay options are {} bytes, more than one page ({}), and this kernel has no "
        "lowerdir+ to pass lowers one by one",
        data.size(), page);
  }
  if (::mount("overlay", rootfs.c_str(), "overlay", with_upper ? 0 : MS_RDONLY, data.c_str()) !=
      0) {
    std::string given;
    for (const auto& option : extra) given += (given.empty() ? ", options " : ",") + option;
    throw_errno("cannot mount the overlay at {} ({} lowers{})", rootfs, lowers, given);
  }
  return "mount(2) relative paths";
}

// The overlay of lower-0..lower-(lowers-1) (and upper/upper, upper/work when `with_upper`)
// under `layer_dir` at `rootfs`; returns the method used ("fsconfig lowerdir+" or
// "mount(2) relative paths").
std::string mount_overlay(const std::string& layer_dir, const std::string& rootfs, size_t lowers,
                          const std::vector<std::string>& extra, bool with_upper,
                          bool try_lowerdir_plus) {
  std::string method;
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      if (::unshare(CLONE_FS) != 0) throw_errno("unshare(CLONE_FS)");
      if (::chdir(layer_dir.c_str()) != 0) throw_errno("cannot chdir to {}", layer_dir);
      std::string plus_error = "not tried";
      if (try_lowerdir_plus) {
        try {
          method = overlay_with_fsconfig(rootfs, lowers, extra, with_upper);
          return;
        } catch (const std::exception& error) {
          plus_error = error.what();  // nothing is attached yet: try the other way
        }
      }
      try {
        method = overlay_with_mount_data(rootfs, lowers, extra, with_upper);
      } catch (const std::exception& error) {
        throw Error(
            "cannot mount the overlay at {}: with one page of mount(2) data: {}; with "
            "fsconfig lowerdir+: {}",
            rootfs, error.what(), plus_error);
      }
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
  if (failure) std::rethrow_exception(failure);
  return method;
}

// A bind of `source_fd` (an O_PATH directory) at the rootfs: the tree is cloned detached,
// made read-only while still detached when asked, and only then attached, so a read-only
// rootfs is never writable, not even for a moment. Not recursive: nothing is mounted below the
// driver's own mount points, and nothing else should come along.
void bind_rootfs(int source_fd, const std::string& rootfs, bool read_only,
                 const std::string& what) {
  UniqueFd tree(::open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (!tree) throw_errno("cannot clone {} for the rootfs bind", what);
  if (read_only) {
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
      throw_errno("cannot make the bind of {} read-only", what);
    }
  }
  if (::move_mount(tree.get(), "", AT_FDCWD, rootfs.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    throw_errno("cannot attach the bind of {} at {}", what, rootfs);
  }
}

// The shared directory at the rootfs. "bind"/"rbind" describe the host side (containerd's bind
// of fs/); a virtiofs mount has no such option.
void mount_virtiofs(const Storage& share, const MountOptions& options, const std::string& rootfs,
                    bool read_only) {
  unsigned long flags = options.flags;
  const std::string& data = options.data;
  if (read_only) flags |= MS_RDONLY;
  if (::mount(share.source.c_str(), rootfs.c_str(), "virtiofs", flags, data.c_str()) != 0) {
    throw Error("virtio-fs storage '{}': {}", share.source,
                mount_error("virtiofs", share.source, rootfs, data));
  }
}

}  // namespace

std::string rootfs_fstype(const Plan& plan) {
  switch (plan.kind) {
    case RootfsKind::Overlay:
    case RootfsKind::ReadOnlyOverlay: return "overlay";
    case RootfsKind::VirtioFs: return "virtiofs";
    case RootfsKind::Bind: return plan.bind.mount_index == 0 ? "ext4" : "erofs";
  }
  return {};
}

void mount_rootfs_shape(const Plan& plan, const ContainerPaths& paths, bool try_lowerdir_plus,
                        MountResult& result) {
  switch (plan.kind) {
    case RootfsKind::Overlay:
    case RootfsKind::ReadOnlyOverlay:
      result.overlay_method =
          mount_overlay(paths.layer_dir, paths.rootfs, plan.lowers.size(), plan.overlay_options,
                        plan.kind == RootfsKind::Overlay, try_lowerdir_plus);
      break;
    case RootfsKind::Bind: {
      const std::string& root = paths.mount_root(plan.bind.mount_index);
      UniqueFd source = open_bind_source(root, plan.bind, plan.bind_spec);
      result.bind_source = plan.bind.path.empty() ? root : root + "/" + plan.bind.path;
      bind_rootfs(source.get(), paths.rootfs, plan.read_only,
                  fmt::format("{} ({})", result.bind_source, plan.bind_spec));
      break;
    }
    case RootfsKind::VirtioFs:
      mount_virtiofs(*plan.share, plan.share_mount, paths.rootfs, plan.read_only);
      result.virtiofs_tag = plan.share->source;
      break;
  }
}

}  // namespace evmdk::guest::detail
