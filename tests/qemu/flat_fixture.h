#pragma once
// A real EROFS image with TWO extra devices, for the flat (fsmeta) scenario.
//
// erofs-utils 1.5 cannot merge layers into an fsmeta, and its `--blobdev` writes only one extra
// device. So: mkfs.erofs --chunksize=4096 --blobdev=BLOB writes a real image whose regular files
// are chunk indexes (device id 1, block address in BLOB). We then split BLOB at a block
// boundary into blob-1 and blob-2 and move every chunk index that points past the split to
// device 2 (address minus the split), write a two-slot device table into an extra metadata
// block (blocks and mapped_blkaddr laid end to end after the fsmeta, as erofs-utils 1.7+ does)
// and recompute the superblock checksum. fsck.erofs --device=blob-1 --device=blob-2 --extract
// then reads every file back on the host before any guest sees the image.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "evmdk/checksum.h"
#include "harness/process.h"
#include "test_support.h"

namespace evmdk::qemu {

struct TwoDeviceFlatFixture {
  std::string fsmeta, blob1, blob2;
  uint32_t fsmeta_blocks = 0, blob1_blocks = 0, blob2_blocks = 0;
  std::map<std::string, std::string> files;  // name in the image root -> contents
};

namespace flat_detail {

inline uint64_t get_le(const std::string& b, size_t at, int width) {
  if (at + width > b.size()) throw HarnessError("flat fixture: read past the end of the fsmeta");
  uint64_t v = 0;
  for (int i = width - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}
inline void put_le(std::string& b, size_t at, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}

// Deterministic pseudo-random bytes (so the image is the same every run).
inline std::string noise(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return out;
}

}  // namespace flat_detail

inline TwoDeviceFlatFixture make_two_device_flat(const std::string& work, const std::string& uuid) {
  using namespace flat_detail;
  namespace fs = std::filesystem;
  TwoDeviceFlatFixture f;
  f.files = {{"first.bin", noise(48 * 1024, 1)},
             {"second.bin", noise(40 * 1024 + 123, 2)},
             {"hostname", "flat-two-devices\n"}};
  std::string tree = work + "/flat-tree";
  std::map<std::string, std::string> tree_files(f.files.begin(), f.files.end());
  test::make_tree(tree, tree_files);
  f.fsmeta = work + "/fsmeta.erofs";
  std::string blob = work + "/blob-all.img";
  test::make_erofs(tree, f.fsmeta, uuid, {"--chunksize=4096", "--blobdev=" + blob});

  std::string img = test::read_file(f.fsmeta);
  std::string data = test::read_file(blob);
  const size_t sb = 1024;
  if (get_le(img, sb, 4) != 0xE0F5E1E2 || get_le(img, sb + 12, 1) != 12) {
    throw HarnessError("flat fixture: unexpected superblock from mkfs.erofs");
  }
  if (get_le(img, sb + 86, 2) != 1) throw HarnessError("flat fixture: mkfs.erofs wrote no device slot");
  const uint64_t block = 4096;
  const uint64_t meta = get_le(img, sb + 40, 4) * block;
  const uint64_t blob_blocks = data.size() / block;
  const uint32_t split = static_cast<uint32_t>(blob_blocks / 2);
  if (data.size() % block != 0 || split == 0) throw HarnessError("flat fixture: odd blob size");

  auto inode_at = [&](uint64_t nid) { return meta + nid * 32; };
  auto inode_header = [&](uint64_t pos) {
    uint16_t format = static_cast<uint16_t>(get_le(img, pos, 2));
    bool extended = format & 1;
    uint16_t xattr_count = static_cast<uint16_t>(get_le(img, pos + 2, 2));
    uint64_t size = extended ? get_le(img, pos + 8, 8) : get_le(img, pos + 8, 4);
    uint64_t body = (extended ? 64 : 32) + (xattr_count ? 12 + (xattr_count - 1) * 4u : 0);
    return std::tuple<unsigned, uint64_t, uint64_t>((format >> 1) & 7, size, pos + body);
  };

  // Root directory: entries of the flat tree (all regular files).
  auto [root_layout, root_size, root_body] = inode_header(inode_at(get_le(img, sb + 14, 2)));
  uint64_t dir = root_layout == 2 ? root_body : get_le(img, inode_at(get_le(img, sb + 14, 2)) + 16, 4) * block;
  if ((root_layout != 2 && root_layout != 0) || root_size > block) {
    throw HarnessError("flat fixture: unexpected root directory layout");
  }
  size_t entries = get_le(img, dir + 8, 2) / 12;
  size_t moved = 0;
  for (size_t i = 0; i < entries; ++i) {
    uint64_t entry = dir + i * 12;
    if (get_le(img, entry + 10, 1) != 1) continue;  // not a regular file
    auto [layout, size, body] = inode_header(inode_at(get_le(img, entry, 8)));
    uint16_t chunk_format = static_cast<uint16_t>(get_le(img, inode_at(get_le(img, entry, 8)) + 16, 2));
    if (layout != 4 || !(chunk_format & 0x20) || (chunk_format & 0x1f) != 0) {
      throw HarnessError("flat fixture: a file is not 4 KiB chunk indexes");
    }
    uint64_t indexes = (body + 7) & ~uint64_t{7};
    for (uint64_t c = 0; c < (size + block - 1) / block; ++c) {
      uint64_t at = indexes + c * 8;
      uint64_t blkaddr = get_le(img, at + 4, 4);
      if (blkaddr == 0xFFFFFFFFu) continue;  // a hole
      if (get_le(img, at + 2, 2) != 1) throw HarnessError("flat fixture: chunk not on device 1");
      if (blkaddr >= split) {
        put_le(img, at + 2, 2, 2);
        put_le(img, at + 4, blkaddr - split, 4);
        ++moved;
      }
    }
  }
  if (moved == 0) throw HarnessError("flat fixture: no chunk landed on device 2");

  // Device table in a new metadata block appended to the fsmeta.
  uint64_t table = img.size();
  if (table % block != 0) throw HarnessError("flat fixture: fsmeta not block aligned");
  img.append(block, '\0');
  f.fsmeta_blocks = static_cast<uint32_t>(img.size() / block);
  f.blob1_blocks = split;
  f.blob2_blocks = static_cast<uint32_t>(blob_blocks - split);
  const std::string tags[2] = {"evmdk-flat-blob-1", "evmdk-flat-blob-2"};
  const uint32_t blocks[2] = {f.blob1_blocks, f.blob2_blocks};
  const uint32_t mapped[2] = {f.fsmeta_blocks, f.fsmeta_blocks + f.blob1_blocks};
  for (int slot = 0; slot < 2; ++slot) {
    uint64_t at = table + slot * 128;
    std::copy(tags[slot].begin(), tags[slot].end(), img.begin() + static_cast<long>(at));
    put_le(img, at + 64, blocks[slot], 4);
    put_le(img, at + 68, mapped[slot], 4);
  }
  put_le(img, sb + 36, f.fsmeta_blocks, 4);
  put_le(img, sb + 86, 2, 2);
  put_le(img, sb + 88, table / 128, 2);
  // Superblock CRC32C over [1024, 4096) with the checksum field zeroed, no final xor.
  std::string covered = img.substr(sb, block - sb);
  put_le(covered, 4, 0, 4);
  put_le(img, sb + 4, crc32c_update(~0u, covered.data(), covered.size()), 4);

  f.blob1 = work + "/blob-1.img";
  f.blob2 = work + "/blob-2.img";
  test::write_file(f.fsmeta, img);
  test::write_file(f.blob1, data.substr(0, split * block));
  test::write_file(f.blob2, data.substr(split * block));
  fs::remove(blob);

  // The fixture must be a valid two-device image before a guest is asked to mount it.
  std::string extracted = work + "/flat-extracted";
  auto fsck = test::run({"fsck.erofs", "--device=" + f.blob1, "--device=" + f.blob2,
                         "--extract=" + extracted, f.fsmeta});
  if (fsck.exit_code != 0) {
    throw HarnessError("flat fixture: fsck.erofs rejected it: " + fsck.out + fsck.err);
  }
  for (const auto& [name, contents] : f.files) {
    if (test::read_file(extracted + "/" + name) != contents) {
      throw HarnessError("flat fixture: fsck.erofs extracted wrong contents for " + name);
    }
  }
  fs::remove_all(extracted);
  return f;
}

}  // namespace evmdk::qemu
