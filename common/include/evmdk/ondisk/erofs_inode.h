#pragma once
// EROFS inodes and directory blocks, as far as the DAX coverage walk needs them
// (host/erofs/dax_coverage.h): the root nid and metadata start from the superblock, the
// compact (32-byte) and extended (64-byte) inode headers, and the 12-byte directory entries.
// Facts from the kernel's on-disk format (fs/erofs/erofs_fs.h); no code taken from it.
//
// Layout facts used here:
// - superblock (from image byte 1024): root_nid le16 at 14 (without 48BIT), meta_blkaddr le32
//   at 40; inode `nid` lives at meta_blkaddr * block_size + nid * 32.
// - i_format le16 at inode byte 0: bit 0 = version (0 compact, 1 extended), bits 1..3 = data
//   layout. i_xattr_icount le16 at 2, i_mode le16 at 4.
//   compact: nlink le16 at 6, size le32 at 8, i_u le32 at 16.
//   extended: size le64 at 8, i_u le32 at 16, nlink le32 at 44.
// - xattr body after the inode: 0 bytes when icount is 0, else 12 + 4 * (icount - 1).
// - directory block: entries {le64 nid; le16 nameoff; u8 file_type; u8 reserved}, the first
//   entry's nameoff / 12 is the entry count; entry i's name runs from its nameoff to the next
//   entry's nameoff (the last one to the end of the block), cut at the first NUL.
//
// Every parser takes bytes (std::span) and checks its bounds; errors are evmdk::Error naming
// `context`.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/ondisk/erofs.h"

namespace evmdk::ondisk {

namespace erofs {

namespace sb {
inline constexpr size_t kRootNid = 14;  // u16 (only without 48BIT, where it is blocks_hi)
inline constexpr size_t kMetaBlkaddr = 40;
inline constexpr size_t kXattrBlkaddr = 44;
}  // namespace sb

inline constexpr size_t kInodeSlotSize = 32;  // nid unit
inline constexpr size_t kCompactInodeSize = 32;
inline constexpr size_t kExtendedInodeSize = 64;
inline constexpr size_t kDirentSize = 12;

// i_format bits 1..3.
enum class DataLayout : uint8_t {
  kFlatPlain = 0,
  kCompressedFull = 1,
  kFlatInline = 2,
  kCompressedCompact = 3,
  kChunkBased = 4,
};
inline constexpr uint8_t kDataLayoutMax = 4;

// Dirent file_type values.
inline constexpr uint8_t kFileTypeUnknown = 0;
inline constexpr uint8_t kFileTypeRegular = 1;
inline constexpr uint8_t kFileTypeDirectory = 2;

}  // namespace erofs

inline const char* erofs_layout_name(uint8_t layout) {
  switch (layout) {
    case 0: return "flat_plain";
    case 1: return "compressed_full";
    case 2: return "flat_inline";
    case 3: return "compressed_compact";
    case 4: return "chunk_based";
    default: return "unknown";
  }
}

// The superblock fields the walk needs (the bytes at image byte 1024, at least 128).
struct ErofsTreeRoot {
  uint64_t root_nid = 0;
  uint32_t meta_blkaddr = 0;
};

inline ErofsTreeRoot parse_erofs_tree_root(std::span<const uint8_t> superblock,
                                           std::string_view context) {
  if (superblock.size() < erofs::kSuperblockSize) {
    throw Error("{}: {} superblock bytes, too few (128)", context, superblock.size());
  }
  ErofsTreeRoot root;
  root.root_nid = load_le16(superblock, erofs::sb::kRootNid);
  root.meta_blkaddr = load_le32(superblock, erofs::sb::kMetaBlkaddr);
  return root;
}

struct ErofsInode {
  bool extended = false;
  uint8_t layout = 0;  // erofs::DataLayout value, 0..7 as stored (values > 4 are unknown)
  uint16_t xattr_icount = 0;
  uint16_t mode = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint32_t raw_blkaddr = 0;  // i_u: first data block for flat layouts

  size_t inode_size() const {
    return extended ? erofs::kExtendedInodeSize : erofs::kCompactInodeSize;
  }
  size_t xattr_size() const { return xattr_icount == 0 ? 0 : 12 + 4 * size_t{xattr_icount - 1u}; }
  // Bytes from the inode's first byte to its inline data (inode + xattr body).
  size_t header_size() const { return inode_size() + xattr_size(); }
  bool is_directory() const { return (mode & 0170000) == 0040000; }
  bool is_regular() const { return (mode & 0170000) == 0100000; }
};

// Decodes an inode from `bytes` (at least 32 bytes; 64 for an extended inode).
inline ErofsInode parse_erofs_inode(std::span<const uint8_t> bytes, std::string_view context) {
  if (bytes.size() < erofs::kCompactInodeSize) {
    throw Error("{}: truncated inode ({} of 32 bytes)", context, bytes.size());
  }
  const uint16_t format = load_le16(bytes, 0);
  ErofsInode inode;
  inode.extended = (format & 1) != 0;
  inode.layout = static_cast<uint8_t>((format >> 1) & 7);
  inode.xattr_icount = load_le16(bytes, 2);
  inode.mode = load_le16(bytes, 4);
  inode.raw_blkaddr = load_le32(bytes, 16);
  if (inode.extended) {
    if (bytes.size() < erofs::kExtendedInodeSize) {
      throw Error("{}: truncated extended inode ({} of 64 bytes)", context, bytes.size());
    }
    inode.size = load_le64(bytes, 8);
    inode.nlink = load_le32(bytes, 44);
  } else {
    inode.nlink = load_le16(bytes, 6);
    inode.size = load_le32(bytes, 8);
  }
  return inode;
}

struct ErofsDirent {
  uint64_t nid = 0;
  uint8_t file_type = 0;
  std::string name;
};

// Decodes one directory block (`block`: the block's valid bytes, at most one block; the last
// block of a directory may be shorter). Throws for entry tables or names that do not fit.
inline std::vector<ErofsDirent> parse_erofs_dir_block(std::span<const uint8_t> block,
                                                      std::string_view context) {
  if (block.size() < erofs::kDirentSize) {
    throw Error("{}: directory block of {} bytes, too short for an entry", context, block.size());
  }
  const uint16_t first_nameoff = load_le16(block, 8);
  if (first_nameoff < erofs::kDirentSize || first_nameoff % erofs::kDirentSize != 0 ||
      first_nameoff > block.size()) {
    throw Error("{}: bad directory block: first name offset {} (block of {} bytes)", context,
                first_nameoff, block.size());
  }
  const size_t count = first_nameoff / erofs::kDirentSize;
  std::vector<ErofsDirent> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const size_t at = i * erofs::kDirentSize;
    const uint16_t nameoff = load_le16(block, at + 8);
    const size_t end = i + 1 < count ? load_le16(block, at + erofs::kDirentSize + 8) : block.size();
    if (nameoff < first_nameoff || end < nameoff || end > block.size()) {
      throw Error("{}: bad directory entry {}: name at {}..{} (block of {} bytes)", context, i,
                  nameoff, end, block.size());
    }
    ErofsDirent entry;
    entry.nid = load_le64(block, at);
    entry.file_type = block[at + 10];
    std::string_view name(reinterpret_cast<const char*>(block.data()) + nameoff, end - nameoff);
    if (auto nul = name.find('\0'); nul != std::string_view::npos) name = name.substr(0, nul);
    if (name.empty()) throw Error("{}: directory entry {} has an empty name", context, i);
    entry.name = std::string(name);
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace evmdk::ondisk
