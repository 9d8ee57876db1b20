#pragma once
// Internal to the hook: the ext4 upper image -- what an existing one holds, and a new one made
// as containerd's mount manager would (sparse, mkfs.ext4 -q), published only when the whole
// hook succeeds.
#include <cstdint>
#include <string>
#include <vector>

#include "evmdk/contract/mount_template.h"

namespace evmdk::host::hook_detail {

// libblkid's view of a file: TYPE, or empty when it finds no filesystem.
std::string blkid_type(const std::string& path);

// A freshly made ext4 image at a temp name next to its final path; removed unless published.
class NewExt4Image {
 public:
  // `directories` (read-only views only): made in the new filesystem by mkfs itself
  // (mkfs.ext4 -d), since a disk attached read-only can never gain them in the guest.
  NewExt4Image(const std::string& final_path, uint64_t size,
               const std::vector<contract::MkdirSpec>& directories = {});
  NewExt4Image(const NewExt4Image&) = delete;
  NewExt4Image& operator=(const NewExt4Image&) = delete;
  ~NewExt4Image();
  // Moves it to its final name, never replacing a file that appeared meanwhile.
  void publish();
  void keep() { kept_ = true; }

 private:
  void make_staging_tree(const std::vector<contract::MkdirSpec>& directories);
  void remove_staging_tree();

  std::string final_path_;
  std::string staging_;  // the tree mkfs.ext4 -d copies in
  std::string temp_path_;
  bool published_ = false;
  bool kept_ = false;
};

}  // namespace evmdk::host::hook_detail
