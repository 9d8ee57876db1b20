#include "evmdk/host/hook/host_lowerdirs.h"

#include <fcntl.h>
#include <libmount.h>
#include <linux/loop.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;

constexpr unsigned kLoopMajor = 7;

// What to tell a user whose list cannot be mapped: the settings under which containerd hands
// the VM the layer files themselves.
constexpr const char* kRemedy =
    "containerd 2.1 lists host directories here; erofs-vmdk maps one only when it is the "
    "snapshotter's own EROFS loop mount of <snapshot>/layer.erofs. containerd 2.2 and later "
    "(EROFS snapshotter) return one erofs mount per layer file, which needs no host mount";

struct TableDeleter {
  void operator()(libmnt_table* table) const { mnt_unref_table(table); }
};
struct IterDeleter {
  void operator()(libmnt_iter* iter) const { mnt_free_iter(iter); }
};

// The parts of one mountinfo line the mapping checks.
struct MountRecord {
  std::string fstype;
  std::string source;
  std::string root;  // the directory of the filesystem mounted there ("/" for all of it)
  dev_t device = 0;
};

std::optional<MountRecord> find_mount(uint64_t mount_id) {
  const char* path = "/proc/self/mountinfo";
  std::unique_ptr<libmnt_table, TableDeleter> table(mnt_new_table());
  if (!table) throw Error("libmount: cannot allocate a mount table");
  if (int rc = mnt_table_parse_file(table.get(), path); rc != 0) {
    throw_errno_message(rc < 0 ? -rc : EINVAL, fmt::format("cannot read {}", path));
  }
  std::unique_ptr<libmnt_iter, IterDeleter> iter(mnt_new_iter(MNT_ITER_FORWARD));
  if (!iter) throw Error("libmount: cannot allocate an iterator");
  libmnt_fs* entry = nullptr;
  while (mnt_table_next_fs(table.get(), iter.get(), &entry) == 0) {
    if (mnt_fs_get_id(entry) < 0 || static_cast<uint64_t>(mnt_fs_get_id(entry)) != mount_id) {
      continue;
    }
    auto text = [](const char* value) { return std::string(value != nullptr ? value : ""); };
    return MountRecord{text(mnt_fs_get_fstype(entry)), text(mnt_fs_get_source(entry)),
                       text(mnt_fs_get_root(entry)), mnt_fs_get_devno(entry)};
  }
  return std::nullopt;
}

// O_PATH descriptor of `directory`, resolved without following any symlink.
UniqueFd open_directory_nofollow(const std::string& directory) {
  struct open_how how {};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  UniqueFd fd(
      static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, directory.c_str(), &how, sizeof how)));
  if (!fd)
    throw_errno("host lowerdir {}: cannot open it as a directory without symlinks", directory);
  return fd;
}

struct LoopBacking {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t offset = 0;
};

// The backing file of the loop device `source` claims to be, after checking the node really
// is block device `device` (mountinfo names it; the name is not trusted).
LoopBacking loop_backing(const std::string& directory, const std::string& source, dev_t device) {
  if (major(device) != kLoopMajor) {
    throw Error(
        "host lowerdir {}: its EROFS filesystem is on device {}:{} ({}), not a loop "
        "device. {}",
        directory, major(device), minor(device), source, kRemedy);
  }
  UniqueFd fd(::open(source.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) throw_errno("host lowerdir {}: cannot open its loop device {}", directory, source);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("host lowerdir {}: fstat {}", directory, source);
  if (!S_ISBLK(st.st_mode) || st.st_rdev != device) {
    throw Error("host lowerdir {}: {} is not the block device {}:{} the mount is on", directory,
                source, major(device), minor(device));
  }
  struct loop_info64 info {};
  if (::ioctl(fd.get(), LOOP_GET_STATUS64, &info) != 0) {
    throw_errno("host lowerdir {}: LOOP_GET_STATUS64 on {}", directory, source);
  }
  return LoopBacking{info.lo_device, info.lo_inode, info.lo_offset};
}

HostLowerLayer resolve_one(const std::string& directory) {
  UniqueFd dir = open_directory_nofollow(directory);
  struct statx stx {};
  if (::statx(dir.get(), "", AT_EMPTY_PATH, STATX_MNT_ID | STATX_INO, &stx) != 0) {
    throw_errno("host lowerdir {}: statx", directory);
  }
  if ((stx.stx_mask & STATX_MNT_ID) == 0 ||
      (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) == 0) {
    throw Error("host lowerdir {}: the kernel reports no mount id for it", directory);
  }
  if ((stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) == 0) {
    throw Error("host lowerdir {}: not a mount point (a plain directory). {}", directory, kRemedy);
  }
  std::optional<MountRecord> mount = find_mount(stx.stx_mnt_id);
  if (!mount) {
    throw Error("host lowerdir {}: mount {} is not in /proc/self/mountinfo", directory,
                stx.stx_mnt_id);
  }
  if (mount->fstype != "erofs") {
    throw Error("host lowerdir {}: a '{}' mount, not EROFS. {}", directory, mount->fstype, kRemedy);
  }
  if (mount->root != "/" || mount->device != makedev(stx.stx_dev_major, stx.stx_dev_minor)) {
    throw Error("host lowerdir {}: mounts only part ({}) of its EROFS filesystem. {}", directory,
                mount->root, kRemedy);
  }
  LoopBacking backing = loop_backing(directory, mount->source, mount->device);

  // containerd's layout: <snapshots>/N/fs is the mount of <snapshots>/N/layer.erofs.
  std::string layer = (fs::path(directory).parent_path() / "layer.erofs").string();
  InputFile file = open_input_file(layer, fmt::format("layer file of host lowerdir {}", directory),
                                   InputKind::RegularFile, /*follow_symlinks=*/false);
  if (static_cast<uint64_t>(file.st.st_dev) != backing.device ||
      static_cast<uint64_t>(file.st.st_ino) != backing.inode) {
    throw Error(
        "host lowerdir {}: its loop device {} is backed by device {} inode {}, not by {} "
        "(device {} inode {}). {}",
        directory, mount->source, backing.device, backing.inode, layer, file.st.st_dev,
        file.st.st_ino, kRemedy);
  }
  if (backing.offset != 0) {
    throw Error("host lowerdir {}: its loop device {} starts at offset {} of {}, not at 0",
                directory, mount->source, backing.offset, layer);
  }
  return HostLowerLayer{directory, file.resolved_path, static_cast<uint64_t>(file.st.st_dev),
                        static_cast<uint64_t>(file.st.st_ino)};
}

}  // namespace

std::vector<std::string> split_host_lowerdir(const std::string& value, const std::string& context) {
  if (value.empty()) throw Error("{}: empty lowerdir", context);
  if (value.find('\\') != std::string::npos) {
    throw Error(
        "{}: lowerdir '{}' has an overlayfs escape ('\\'); host paths with escapes are "
        "not supported",
        context, value);
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = value.find(':', start);
    std::string entry = value.substr(start, end == std::string::npos ? end : end - start);
    if (entry.empty()) throw Error("{}: lowerdir '{}' has an empty entry", context, value);
    if (entry.front() != '/') {
      throw Error("{}: lowerdir entry '{}' is not an absolute host path", context, entry);
    }
    while (entry.size() > 1 && entry.back() == '/') entry.pop_back();
    out.push_back(std::move(entry));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

std::vector<HostLowerLayer> resolve_host_lowerdirs(const std::vector<std::string>& directories) {
  std::vector<HostLowerLayer> out;
  out.reserve(directories.size());
  for (const auto& directory : directories) out.push_back(resolve_one(directory));
  return out;
}

}  // namespace evmdk::host
