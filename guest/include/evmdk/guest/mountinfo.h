#pragma once
// Reading /proc/self/mountinfo (through libmount): which mount points are at or below a
// directory.
#include <string>
#include <vector>

namespace evmdk::guest {

struct MountEntry {
  int id = 0;
  int parent_id = 0;
  std::string mount_point;  // unescaped
  std::string fstype;
  std::string source;
  std::string super_options;  // the filesystem's own (e.g. EROFS's dax=always)
};

std::vector<MountEntry> read_mountinfo();  // in the kernel's order (parents before children)
// Mount points equal to `dir` or below it, in mountinfo order.
std::vector<MountEntry> mounts_under(const std::string& dir);
bool is_mount_point(const std::string& path);

}  // namespace evmdk::guest
