#pragma once
// containerd 2.1's EROFS snapshotter mounts every layer on the host itself and hands over ONE
// `overlay` mount whose `lowerdir` lists those host mount points (`<snapshots>/N/fs`). A VM
// cannot use host directories, so the hook maps each one back to the layer file under it —
// but only when the kernel's mount table proves the mapping: the directory is the root of an
// EROFS mount whose loop device is backed by that very `<snapshots>/N/layer.erofs` (device and
// inode equal, offset 0). A name alone is never trusted.
#include <cstdint>
#include <string>
#include <vector>

namespace evmdk::host {

struct HostLowerLayer {
  std::string directory;   // the host lowerdir, as containerd named it
  std::string layer_path;  // the layer file backing it, symlinks resolved
  uint64_t device = 0;     // st_dev / st_ino of layer_path (what the loop device is backed by)
  uint64_t inode = 0;
};

// Splits an overlay `lowerdir=` value into its directories (top first). Refuses an empty list,
// an empty entry, a relative path, and overlayfs escapes (a backslash), naming `context`.
std::vector<std::string> split_host_lowerdir(const std::string& value, const std::string& context);

// Maps each host lowerdir to its layer file (same order). Throws evmdk::Error naming the
// directory and what the mount table showed (not a mount root, not EROFS, not on a loop device,
// backed by another file, ...) and which containerd versions and settings hand the VM the layer
// files instead.
std::vector<HostLowerLayer> resolve_host_lowerdirs(const std::vector<std::string>& directories);

}  // namespace evmdk::host
