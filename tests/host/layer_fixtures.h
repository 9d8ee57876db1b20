#pragma once
// Helpers shared by the host tests: real EROFS layers from mkfs.erofs, in-place superblock
// patches (with the CRC32C recomputed, so only the patched field is wrong), and the
// multi-device fixture for flat mode.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "evmdk/checksum.h"
#include "evmdk/unique_fd.h"
#include "test_support.h"

namespace evmdk::test {

inline std::string read_bytes(const std::string& path, uint64_t offset, size_t size) {
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  std::string out(size, '\0');
  pread_exact(fd.get(), out.data(), size, offset, path);
  return out;
}

inline void write_bytes(const std::string& path, uint64_t offset, const std::string& bytes) {
  UniqueFd fd = open_or_throw(path, O_WRONLY);
  write_all(fd.get(), bytes.data(), bytes.size(), path, static_cast<int64_t>(offset));
}

inline void put_le(std::string& buffer, size_t offset, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) buffer[offset + i] = static_cast<char>(value >> (8 * i));
}

// Recomputes the EROFS superblock CRC32C after a patch (the image must have SB_CHKSUM).
inline void fix_superblock_checksum(const std::string& image) {
  std::string sb = read_bytes(image, 1024, 128);
  unsigned blkszbits = static_cast<uint8_t>(sb[12]);
  size_t block = size_t{1} << blkszbits;
  size_t length = block > 1024 ? block - 1024 : block;
  std::string covered = read_bytes(image, 1024, length);
  std::memset(covered.data() + 4, 0, 4);
  uint32_t crc = crc32c_update(~0u, covered.data(), covered.size());
  std::string field(4, '\0');
  put_le(field, 0, crc, 4);
  write_bytes(image, 1028, field);
}

// Patches `width` bytes at `offset` from the superblock start and fixes the checksum.
inline void patch_superblock(const std::string& image, size_t offset, uint64_t value, int width) {
  std::string field(static_cast<size_t>(width), '\0');
  put_le(field, 0, value, width);
  write_bytes(image, 1024 + offset, field);
  fix_superblock_checksum(image);
}

// A small layer with a few files; `salt` makes the contents differ between layers.
inline void make_layer(const std::string& work, const std::string& name, const std::string& uuid,
                       const std::string& salt = {}) {
  std::string tree = work + "/" + name + ".d";
  make_tree(tree, {{"etc/" + name, "layer " + name + salt + "\n"},
                   {"data/blob", std::string(9000, static_cast<char>('a' + name.size() % 26))},
                   {"empty/", ""}});
  make_erofs(tree, work + "/" + name + ".erofs", uuid);
}

// A real multi-device EROFS image. erofs-utils 1.5 cannot merge layers, but
// `mkfs.erofs --chunksize=4096 --blobdev=BLOB` writes a real two-device image: the metadata
// (fsmeta) with a one-slot device table, and file data as chunks in BLOB (device 1). 1.5
// leaves the slot's blocks and mapped_blkaddr 0, so we fill them in as erofs-utils 1.7+ does
// (blob laid right after the metadata: mapped_blkaddr = fsmeta blocks) and fix the checksum.
// The kernel (6.4+) then mounts "fsmeta ++ blob" in flat-device mode.
struct MultiDeviceFixture;
inline void set_slot(const MultiDeviceFixture& f, uint32_t blocks, uint32_t mapped_blkaddr);

struct MultiDeviceFixture {
  std::string tree, fsmeta, blob;
  uint32_t fsmeta_blocks = 0;
  uint32_t blob_blocks = 0;
  uint32_t slot_offset = 0;  // byte offset of slot 1 in the fsmeta
};

inline MultiDeviceFixture make_multi_device(const std::string& work) {
  MultiDeviceFixture f;
  f.tree = work + "/md.d";
  std::string big;
  for (int i = 0; i < 3000; ++i) big += "line " + std::to_string(i) + " of the chunked file\n";
  make_tree(f.tree, {{"big.txt", big}, {"etc/hostname", "flat\n"}, {"dir/inner", "inner\n"}});
  f.fsmeta = work + "/fsmeta.erofs";
  f.blob = work + "/blob.img";
  make_erofs(f.tree, f.fsmeta, "8a1b2c3d-0000-4000-8000-00000000f1a7",
             {"--chunksize=4096", "--blobdev=" + f.blob});
  std::string sb = read_bytes(f.fsmeta, 1024, 128);
  auto le32 = [&sb](size_t o) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(sb[o + i]);
    return v;
  };
  f.fsmeta_blocks = le32(36);
  uint16_t slotoff = static_cast<uint16_t>(static_cast<uint8_t>(sb[88]) |
                                           (static_cast<uint8_t>(sb[89]) << 8));
  f.slot_offset = slotoff * 128u;
  auto blob_size = std::filesystem::file_size(f.blob);
  f.blob_blocks = static_cast<uint32_t>(blob_size / 4096);
  set_slot(f, f.blob_blocks, f.fsmeta_blocks);
  return f;
}

// Rewrites slot 1 (blocks, mapped_blkaddr) of a fixture's fsmeta.
inline void set_slot(const MultiDeviceFixture& f, uint32_t blocks, uint32_t mapped_blkaddr) {
  std::string fields(8, '\0');
  put_le(fields, 0, blocks, 4);
  put_le(fields, 4, mapped_blkaddr, 4);
  write_bytes(f.fsmeta, f.slot_offset + 64, fields);
  fix_superblock_checksum(f.fsmeta);
}

}  // namespace evmdk::test
