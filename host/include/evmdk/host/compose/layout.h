#pragma once
// layout.json, typed: what compose wrote (every layer, every extent, and the identity of every
// file it read) and what verify and inspect read back. One writer (to_json) and one reader
// (layout_from_json) for all three. verify trusts a descriptor only as far as this file lists
// its files, and detects a layer file that is no longer the one composed by its identity.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/input_file.h"

namespace evmdk::host {

// The files of a compose output directory (layout.json's `disk` names the descriptor).
inline constexpr const char* kDescriptorName = "disk.vmdk";
inline constexpr const char* kGptHeadName = "gpt-head.img";
inline constexpr const char* kGptTailName = "gpt-tail.img";
inline constexpr const char* kZeroName = "zero.img";
inline constexpr const char* kStorageName = "storage.json";
inline constexpr const char* kQemuName = "qemu.json";
inline constexpr const char* kLayoutName = "layout.json";
inline constexpr const char* kRawImageName = "disk.img";  // --format raw

// Who a file is: st_dev/st_ino (a replaced file or retargeted name), its size, and a SHA-256 of
// its head (EROFS: the superblock block and sizes, probe's identity; other blobs: the first
// 4 KiB), so a file rewritten in place is caught too.
struct FileIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  std::string head_sha256;  // hex
  bool operator==(const FileIdentity&) const = default;
};
// Identity of an open non-EROFS blob (EROFS layers take theirs from probe_layer).
FileIdentity blob_identity(const InputFile& file, const std::string& name);

struct LayoutLayer {
  size_t index = 0;
  std::string path;  // the resolved file compose read (symlinks resolved)
  uint64_t first_lba = 0;
  uint64_t sectors = 0;
  uint64_t file_size = 0;
  bool erofs = true;
  std::string erofs_uuid;
  uint64_t fs_size = 0;
  uint32_t block_size = 0;
  std::string volume_name;
  std::optional<FileIdentity> identity;  // absent in layouts written before it existed
  // dm-verity, when the layer is protected.
  std::string verity_root_hash;
  uint64_t verity_hash_offset = 0;       // in the layer file
  uint64_t verity_hash_disk_offset = 0;  // on the disk
  // gpt
  std::optional<uint32_t> partition;
  uint64_t partition_first_lba = 0;
  uint64_t partition_last_lba = 0;
  std::string partuuid;
  std::string partition_name;
  bool operator==(const LayoutLayer&) const = default;
};

struct LayoutExtent {
  std::string role;
  uint64_t first_lba = 0;
  uint64_t sectors = 0;
  std::string path;
  uint64_t file_offset_sectors = 0;
  std::optional<size_t> layer_index;
  bool operator==(const LayoutExtent&) const = default;
};

struct Layout {
  std::string mode;    // raw, gpt, flat
  std::string disk;    // the descriptor, or the layer itself in raw mode
  std::string format;  // vmdk or raw
  std::string serial;
  uint64_t disk_sectors = 0;
  std::string disk_guid;                // gpt
  std::optional<uint32_t> entry_count;  // gpt
  std::vector<LayoutLayer> layers;
  std::vector<LayoutExtent> extents;
  // A raw image of a gpt/flat disk (format raw, disk names disk.img): the assembly report
  // (to_json(RawImageReport)); null otherwise. Extents then say where its bytes came from.
  nlohmann::json raw_image;
  // "pmem" for a disk composed for virtio-pmem (--attach pmem); empty (not written) for blk.
  std::string attach;
  bool operator==(const Layout&) const = default;
};

nlohmann::json to_json(const Layout& layout);
// Throws evmdk::Error naming `name` for a document that is not a layout.
Layout layout_from_json(const nlohmann::json& json, const std::string& name);
// Reads <path> with open_input_file (no FIFO, no special file, at most 64 MiB).
Layout read_layout(const std::string& path);

}  // namespace evmdk::host
