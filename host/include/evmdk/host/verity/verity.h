#pragma once
// dm-verity on the host: containerd's `layer.erofs.dmverity` sidecar, the dm-verity superblock
// at `hashoffset`, `verity format` (append a hash tree to a layer, bit-identical to
// `veritysetup format` with the same parameters), and the per-layer X-kata.dmverity.* options
// compose hands to the guest under a --verity off|auto|on policy. See docs/verity.md.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/digest.h"
#include "evmdk/host/erofs/probe.h"  // format_uuid
#include "evmdk/input_file.h"
#include "evmdk/ondisk/verity.h"

namespace evmdk::host {

// ---- containerd sidecar: {"roothash": "<hex>", "hashoffset": <bytes>} ----
struct VeritySidecar {
  std::string root_hash;     // lowercase hex
  uint64_t hash_offset = 0;  // bytes into layer.erofs where the verity superblock starts
  bool operator==(const VeritySidecar&) const = default;
};

std::string verity_sidecar_path(const std::string& layer_path);  // "<layer>.dmverity"
// Throws evmdk::Error naming the file for unreadable JSON, missing/ill-typed fields.
VeritySidecar parse_verity_sidecar(std::string_view json_text, const std::string& path);
VeritySidecar read_verity_sidecar(const std::string& path);
std::string verity_sidecar_json(const VeritySidecar& sidecar);
void write_verity_sidecar(const std::string& path, const VeritySidecar& sidecar);  // atomic

// ---- dm-verity superblock (512 bytes, little-endian, at hashoffset): evmdk/ondisk/verity.h ----
using ondisk::kVeritySuperblockSize;
using ondisk::parse_verity_superblock;
using ondisk::serialize_verity_superblock;
using ondisk::VeritySuperblock;
VeritySuperblock read_verity_superblock(const std::string& path, uint64_t hash_offset);

// format_uuid() comes from probe.h; hex text from evmdk/digest.h.
std::array<uint8_t, 16> parse_uuid(std::string_view text);  // throws on a malformed UUID
using evmdk::from_hex;                                      // throws naming `what`
using evmdk::to_hex;

// ---- the hash tree ----
// Geometry of a tree: where each level lives, in hash blocks from the tree start (the block
// after the superblock). Level 0 hashes the data blocks; the top level is stored first.
struct VerityGeometry {
  uint32_t digest_size = 0;
  uint32_t hashes_per_block_bits = 0;
  std::vector<uint64_t> level_start;   // per level, first block (relative to the tree start)
  std::vector<uint64_t> level_blocks;  // per level, number of hash blocks
  uint64_t tree_blocks = 0;            // all levels
};
VerityGeometry verity_geometry(const VeritySuperblock& sb);

// The hash area of a superblock at `hash_offset` in a file of `file_size` bytes, every size in
// overflow-checked arithmetic: the data area lies before hash_offset and the superblock plus
// tree end inside the file. Throws evmdk::Error starting with `context` otherwise, so nothing is
// ever sized (allocated, read, mapped) from a superblock that does not fit its file.
struct VerityLayout {
  VerityGeometry geometry;
  uint64_t data_bytes = 0;  // data_blocks * data_block_size
  uint64_t hash_end = 0;    // byte just past the tree
};
VerityLayout verity_layout(const VeritySuperblock& sb, uint64_t hash_offset, uint64_t file_size,
                           const std::string& context);

// The hash algorithms a dm-verity superblock may name: sha256 and sha512 (what the guest's
// kernel is known to carry and the tools here are tested with). Every parse, format and
// serialisation refuses any other.
using ondisk::verity_algorithm_allowed;

struct VerityFormatOptions {
  // Where the superblock goes. Default: the EROFS image size from its superblock (so a second
  // run after an interrupted one does not append after a partial tree), or the file size
  // rounded up to the hash block size when the file is not EROFS.
  std::optional<uint64_t> hash_offset;
  std::string algorithm = "sha256";
  uint32_t data_block_size = 4096;
  uint32_t hash_block_size = 4096;
  uint32_t hash_type = 1;
  std::vector<uint8_t> salt = std::vector<uint8_t>(32, 0);  // containerd's default
  std::optional<std::array<uint8_t, 16>> uuid;              // default: random (v4)
  unsigned threads = 0;                                     // 0: one per core
  bool write_sidecar = true;                                // <layer>.dmverity
  bool force = false;  // re-format a layer that already has a sidecar
};

struct VerityFormatResult {
  VeritySidecar sidecar;
  VeritySuperblock superblock;
  uint64_t hash_blocks = 0;  // tree blocks, not counting the superblock
  uint64_t file_size = 0;    // layer size afterwards
};

// Appends superblock + hash tree at hash_offset (data = the first hash_offset bytes, zero
// padded up to it) and writes the sidecar. Throws evmdk::Error naming the layer.
VerityFormatResult verity_format(const std::string& layer_path, const VerityFormatOptions& options);

// The whole tree recomputed from the data area and compared with the tree stored after the
// superblock at hash_offset: what dm-verity in the guest will accept. `root_hash` is the
// recomputed root; `first_bad_tree_byte` the file offset of the first stored tree byte that
// differs (nullopt when the stored tree is exactly the recomputed one).
struct VerityTreeCheck {
  std::string root_hash;
  std::optional<uint64_t> first_bad_tree_byte;
};
VerityTreeCheck verity_check_tree(const std::string& path, uint64_t hash_offset,
                                  const VeritySuperblock& sb, unsigned threads = 0);
// The same check where the layer sits inside a disk image (a raw composed disk, read as the
// guest reads it): data blocks from byte `data_offset` of `fd`, the superblock at byte
// `hash_offset`, the tree after it; first_bad_tree_byte is then a byte of the image. Throws
// evmdk::Error naming `name` when the tree does not fit between them and the image's end.
VerityTreeCheck verity_check_tree_at(int fd, const std::string& name, uint64_t data_offset,
                                     uint64_t hash_offset, const VeritySuperblock& sb,
                                     unsigned threads = 0);

// ---- a protected layer, as compose sees it ----
// The typed dm-verity description of one layer: what compose puts on the disk and encodes into
// the layer's Storage (ComposeOptions' LayerInput::verity).
struct VerityLayerInfo {
  VeritySidecar sidecar;
  VeritySuperblock superblock;
  uint64_t hash_end = 0;  // byte just past the tree: the layer's extent must reach this far
  // The layer file inspected (st_dev, st_ino): compose refuses the description for another file.
  uint64_t device = 0;
  uint64_t inode = 0;
};
// Reads the sidecar and the superblock and cross-checks them with the file: the data area lies
// before hashoffset, the tree fits in the file, and the root hash matches the tree's top
// block (a cheap check: one block is hashed). nullopt when the layer has no sidecar.
std::optional<VerityLayerInfo> inspect_verity_layer(const std::string& layer_path);
// Same, for a layer the caller already opened (open_input_file) as `layer_path`.
std::optional<VerityLayerInfo> inspect_verity_layer(const InputFile& layer,
                                                    const std::string& layer_path);

enum class VerityPolicy { kOff, kAuto, kOn };
VerityPolicy parse_verity_policy(std::string_view text);  // "off" | "auto" | "on"
std::string_view to_string(VerityPolicy policy);

// The policy itself, for one layer: nullopt under off, and under auto when the layer has no
// sidecar; the inspected layer otherwise. Throws evmdk::Error starting with `context` (e.g.
// "layer 1 (path)") for on without verity data, and for a sidecar that is present but broken
// under any policy but off.
std::optional<VerityLayerInfo> verity_layer_under_policy(const std::string& layer_path,
                                                         VerityPolicy policy,
                                                         const std::string& context);
std::optional<VerityLayerInfo> verity_layer_under_policy(const InputFile& layer,
                                                         const std::string& layer_path,
                                                         VerityPolicy policy,
                                                         const std::string& context);

// The X-kata.dmverity-enabled / X-kata.dmverity.* options for one layer under `policy`:
//  off  -> none;
//  auto -> the options when the layer has a sidecar, none when it has not; a sidecar that is
//          present but broken is an error (never silently dropped);
//  on   -> the options; a layer without verity data is an error naming it.
// Compose calls this for every lower in every mode and appends the result to its options.
std::vector<std::string> verity_options_for_layer(const std::string& layer_path,
                                                  VerityPolicy policy);
// Same, from an already inspected layer.
std::vector<std::string> verity_options(const VerityLayerInfo& info);
// With the hash area at `hash_offset` instead of the sidecar's (flat mode moves every tree
// after the last device and names its disk offset).
std::vector<std::string> verity_options(const VerityLayerInfo& info, uint64_t hash_offset);

}  // namespace evmdk::host
