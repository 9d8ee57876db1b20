#pragma once
// The EROFS on-disk layout this project reads: the superblock at byte 1024 of an image and the
// device table of multi-device images (docs/erofs-format.md has the tables). One parser of
// the superblock bytes for the host prober, compose, verity format and the guest, so every
// reader sees the same fields, including the 48-bit block counts of 48BIT images.
//
// The parsers take the bytes (a std::span) and check every bound themselves; reading the
// bytes from a file, and what to do with an image that is not EROFS, stays with the caller.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::ondisk {

namespace erofs {

inline constexpr uint32_t kMagic = 0xE0F5E1E2;
inline constexpr uint64_t kSuperblockOffset = 1024;  // from the start of the image
inline constexpr size_t kSuperblockSize = 128;       // the fields read here
inline constexpr size_t kDeviceSlotSize = 128;
inline constexpr size_t kDeviceTagSize = 64;

// Block size bits the format allows (512 bytes .. 64 KiB). The kernel accepts 9..PAGE_SHIFT;
// the host prober narrows the range further (SuperblockLimits).
inline constexpr uint8_t kMinBlkszBits = 9;
inline constexpr uint8_t kMaxBlkszBits = 16;

// Superblock field offsets, from the superblock's first byte (image byte 1024).
namespace sb {
inline constexpr size_t kMagic = 0;
inline constexpr size_t kChecksum = 4;
inline constexpr size_t kFeatureCompat = 8;
inline constexpr size_t kBlkszBits = 12;
inline constexpr size_t kBlocksHi = 14;  // u16: root_nid, or blocks bits 32..47 with 48BIT
inline constexpr size_t kBuildTime = 24;
inline constexpr size_t kBlocks = 36;  // u32: blocks bits 0..31
inline constexpr size_t kUuid = 48;
inline constexpr size_t kVolumeName = 64;
inline constexpr size_t kVolumeNameSize = 16;
inline constexpr size_t kFeatureIncompat = 80;
inline constexpr size_t kExtraDevices = 86;
inline constexpr size_t kDevtSlotOff = 88;
inline constexpr size_t kDirBlkBits = 90;
static_assert(kDirBlkBits < kSuperblockSize);
}  // namespace sb

// Device slot field offsets, from the slot's first byte.
namespace slot {
inline constexpr size_t kTag = 0;
inline constexpr size_t kBlocks = 64;           // u32
inline constexpr size_t kMappedBlkaddr = 68;    // u32 (a.k.a. uniaddr)
inline constexpr size_t kBlocksHi = 72;         // u16, 48BIT only
inline constexpr size_t kMappedBlkaddrHi = 74;  // u16, 48BIT only
static_assert(kMappedBlkaddrHi + 2 <= kDeviceSlotSize);
}  // namespace slot

namespace feature {
inline constexpr uint32_t kCompatSbChksum = 0x1;
inline constexpr uint32_t kCompatMtime = 0x2;
inline constexpr uint32_t kCompatXattrFilter = 0x4;

inline constexpr uint32_t kIncompatZeroPadding = 0x1;
inline constexpr uint32_t kIncompatComprCfgs = 0x2;
inline constexpr uint32_t kIncompatChunkedFile = 0x4;
inline constexpr uint32_t kIncompatDeviceTable = 0x8;
inline constexpr uint32_t kIncompatZtailpacking = 0x10;
inline constexpr uint32_t kIncompatFragments = 0x20;
inline constexpr uint32_t kIncompatXattrPrefixes = 0x40;
inline constexpr uint32_t kIncompat48Bit = 0x80;
// Every incompatible bit known here; ErofsSuperblock::unknown_incompat() is the rest.
inline constexpr uint32_t kIncompatKnown = 0xFF;
}  // namespace feature

}  // namespace erofs

// The superblock fields, decoded. Only magic and block size bits are checked by the parser;
// the rest is what the image says (callers decide what they support: see the helpers below).
struct ErofsSuperblock {
  uint32_t checksum = 0;
  uint32_t feature_compat = 0;
  uint32_t feature_incompat = 0;
  uint8_t blkszbits = 0;
  uint8_t dirblkbits = 0;
  uint64_t build_time = 0;
  uint64_t blocks = 0;  // with 48BIT: bits 32..47 from the u16 at byte 14
  std::array<uint8_t, 16> uuid{};
  std::array<uint8_t, erofs::sb::kVolumeNameSize> volume_name{};  // raw bytes
  uint16_t extra_devices = 0;
  uint16_t devt_slotoff = 0;

  uint32_t block_size() const { return uint32_t{1} << blkszbits; }
  // blocks << blkszbits: never overflows (blocks < 2^48, blkszbits <= 16).
  uint64_t fs_size() const { return blocks << blkszbits; }
  bool has_checksum() const { return (feature_compat & erofs::feature::kCompatSbChksum) != 0; }
  bool has_device_table() const {
    return (feature_incompat & erofs::feature::kIncompatDeviceTable) != 0;
  }
  bool wide_addresses() const { return (feature_incompat & erofs::feature::kIncompat48Bit) != 0; }
  uint32_t unknown_incompat() const { return feature_incompat & ~erofs::feature::kIncompatKnown; }
  // Byte range of the device table from the start of the image (devt_slotoff * 128, and
  // extra_devices slots of 128 bytes): both fit easily in 64 bits (u16 * 128).
  uint64_t device_table_offset() const { return uint64_t{devt_slotoff} * erofs::kDeviceSlotSize; }
  uint64_t device_table_size() const { return uint64_t{extra_devices} * erofs::kDeviceSlotSize; }

  bool operator==(const ErofsSuperblock&) const = default;
};

struct ErofsSuperblockLimits {
  uint8_t min_blkszbits = erofs::kMinBlkszBits;
  uint8_t max_blkszbits = erofs::kMaxBlkszBits;  // at most kMaxBlkszBits
};

// Whether `superblock` (the bytes at image byte 1024) starts with the EROFS magic; false for
// fewer than 4 bytes.
bool has_erofs_magic(std::span<const uint8_t> superblock);

// Decodes the superblock from `superblock`, the bytes at image byte 1024 (at least 128; more
// are ignored). Throws evmdk::Error starting with `context`:
//   "<context>: not an EROFS image: <n> superblock bytes, too few for a superblock (128)"
//   "<context>: not an EROFS image (magic 0x... at byte 1024, expected 0xe0f5e1e2)"
//   "<context>: unsupported EROFS block size bits <b> (supported <min>..<max>)"
ErofsSuperblock parse_erofs_superblock(std::span<const uint8_t> superblock,
                                       std::string_view context,
                                       const ErofsSuperblockLimits& limits = {});

// One 128-byte device table slot (device id = index + 1).
struct ErofsDeviceSlot {
  std::string tag;  // printable: stops at the first NUL, other bytes outside 0x20..0x7e become '?'
  uint64_t blocks = 0;          // | blocks_hi << 32 with 48BIT
  uint64_t mapped_blkaddr = 0;  // | mapped_blkaddr_hi << 32 with 48BIT

  bool operator==(const ErofsDeviceSlot&) const = default;
};

// Decodes one slot (`slot` holds at least 128 bytes). `wide_addresses`: the image has 48BIT
// (ErofsSuperblock::wide_addresses()). Throws evmdk::Error naming `context` for a short span.
ErofsDeviceSlot parse_erofs_device_slot(std::span<const uint8_t> slot, bool wide_addresses,
                                        std::string_view context);

// Decodes superblock.extra_devices slots from `table`, the bytes at
// superblock.device_table_offset() (at least device_table_size() bytes). Throws evmdk::Error
// naming `context` for a short span or a table without the DEVICE_TABLE feature.
std::vector<ErofsDeviceSlot> parse_erofs_device_table(std::span<const uint8_t> table,
                                                      const ErofsSuperblock& superblock,
                                                      std::string_view context);

// Bytes the superblock checksum covers, from image byte 1024: block size - 1024 when the block
// is larger than 1024 bytes, else the block size.
uint64_t erofs_checksum_length(const ErofsSuperblock& superblock);

// CRC32C of `covered` (erofs_checksum_length() bytes from image byte 1024) with the checksum
// field taken as zero: what a valid SB_CHKSUM image stores.
uint32_t erofs_superblock_crc(std::span<const uint8_t> covered);

// When the image has SB_CHKSUM: checks the stored checksum against `image_head`, the image's
// first bytes (at least 1024 + erofs_checksum_length()). Throws evmdk::Error starting with
// `context`:
//   "<context>: truncated EROFS image: the superblock checksum covers bytes past the end"
//   "<context>: bad EROFS superblock checksum: stored 0x..., computed 0x..."
// Does nothing for an image without SB_CHKSUM.
void check_erofs_checksum(std::span<const uint8_t> image_head, const ErofsSuperblock& superblock,
                          std::string_view context);

// Printable text of a fixed-size, NUL-padded name field (tag, volume name): stops at the first
// NUL, bytes outside 0x20..0x7e become '?'.
std::string erofs_printable(std::span<const uint8_t> field);

// "sb_chksum,mtime,..." for the known bits set in compat and incompat (unknown bits omitted).
std::string erofs_feature_names(uint32_t compat, uint32_t incompat);

}  // namespace evmdk::ondisk
