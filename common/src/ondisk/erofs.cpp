#include "evmdk/ondisk/erofs.h"

#include <algorithm>
#include <utility>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"

namespace evmdk::ondisk {

bool has_erofs_magic(std::span<const uint8_t> superblock) {
  return superblock.size() >= 4 && load_le32(superblock.data()) == erofs::kMagic;
}

ErofsSuperblock parse_erofs_superblock(std::span<const uint8_t> bytes, std::string_view context,
                                       const ErofsSuperblockLimits& limits) {
  if (bytes.size() < erofs::kSuperblockSize) {
    throw Error("{}: not an EROFS image: {} superblock bytes, too few for a superblock ({})",
                context, bytes.size(), erofs::kSuperblockSize);
  }
  const uint8_t* p = bytes.data();
  uint32_t magic = load_le32(p + erofs::sb::kMagic);
  if (magic != erofs::kMagic) {
    throw Error("{}: not an EROFS image (magic {:#010x} at byte 1024, expected {:#010x})", context,
                magic, erofs::kMagic);
  }
  ErofsSuperblock sb;
  sb.checksum = load_le32(p + erofs::sb::kChecksum);
  sb.feature_compat = load_le32(p + erofs::sb::kFeatureCompat);
  sb.feature_incompat = load_le32(p + erofs::sb::kFeatureIncompat);
  sb.blkszbits = p[erofs::sb::kBlkszBits];
  sb.dirblkbits = p[erofs::sb::kDirBlkBits];
  sb.build_time = load_le64(p + erofs::sb::kBuildTime);
  sb.blocks = load_le32(p + erofs::sb::kBlocks);
  if (sb.wide_addresses()) sb.blocks |= uint64_t{load_le16(p + erofs::sb::kBlocksHi)} << 32;
  std::copy_n(p + erofs::sb::kUuid, sb.uuid.size(), sb.uuid.begin());
  std::copy_n(p + erofs::sb::kVolumeName, sb.volume_name.size(), sb.volume_name.begin());
  sb.extra_devices = load_le16(p + erofs::sb::kExtraDevices);
  sb.devt_slotoff = load_le16(p + erofs::sb::kDevtSlotOff);
  uint8_t min_bits = std::max(limits.min_blkszbits, erofs::kMinBlkszBits);
  uint8_t max_bits = std::min(limits.max_blkszbits, erofs::kMaxBlkszBits);
  if (sb.blkszbits < min_bits || sb.blkszbits > max_bits) {
    throw Error("{}: unsupported EROFS block size bits {} (supported {}..{})", context,
                sb.blkszbits, min_bits, max_bits);
  }
  return sb;
}

std::string erofs_printable(std::span<const uint8_t> field) {
  std::string out;
  for (uint8_t byte : field) {
    if (byte == 0) break;
    out += (byte >= 0x20 && byte < 0x7f) ? static_cast<char>(byte) : '?';
  }
  return out;
}

ErofsDeviceSlot parse_erofs_device_slot(std::span<const uint8_t> bytes, bool wide_addresses,
                                        std::string_view context) {
  if (bytes.size() < erofs::kDeviceSlotSize) {
    throw Error("{}: EROFS device slot truncated: {} bytes, a slot has {}", context, bytes.size(),
                erofs::kDeviceSlotSize);
  }
  const uint8_t* p = bytes.data();
  ErofsDeviceSlot slot;
  slot.tag = erofs_printable(bytes.subspan(erofs::slot::kTag, erofs::kDeviceTagSize));
  slot.blocks = load_le32(p + erofs::slot::kBlocks);
  slot.mapped_blkaddr = load_le32(p + erofs::slot::kMappedBlkaddr);
  if (wide_addresses) {
    slot.blocks |= uint64_t{load_le16(p + erofs::slot::kBlocksHi)} << 32;
    slot.mapped_blkaddr |= uint64_t{load_le16(p + erofs::slot::kMappedBlkaddrHi)} << 32;
  }
  return slot;
}

std::vector<ErofsDeviceSlot> parse_erofs_device_table(std::span<const uint8_t> table,
                                                      const ErofsSuperblock& superblock,
                                                      std::string_view context) {
  std::vector<ErofsDeviceSlot> slots;
  if (superblock.extra_devices == 0) return slots;
  if (!superblock.has_device_table()) {
    throw Error("{}: EROFS superblock lists {} extra devices but no device table feature", context,
                superblock.extra_devices);
  }
  if (table.size() < superblock.device_table_size()) {
    throw Error("{}: EROFS device table truncated: {} bytes for {} slots of {}", context,
                table.size(), superblock.extra_devices, erofs::kDeviceSlotSize);
  }
  slots.reserve(superblock.extra_devices);
  for (size_t i = 0; i < superblock.extra_devices; ++i) {
    slots.push_back(
        parse_erofs_device_slot(table.subspan(i * erofs::kDeviceSlotSize, erofs::kDeviceSlotSize),
                                superblock.wide_addresses(), context));
  }
  return slots;
}

uint64_t erofs_checksum_length(const ErofsSuperblock& superblock) {
  uint64_t block = superblock.block_size();
  return block > erofs::kSuperblockOffset ? block - erofs::kSuperblockOffset : block;
}

uint32_t erofs_superblock_crc(std::span<const uint8_t> covered) {
  // The checksum field (bytes 4..7) counts as zero: feed the bytes around it.
  static constexpr uint8_t kZeros[4] = {};
  uint32_t crc = ~0u;
  size_t head = std::min<size_t>(covered.size(), erofs::sb::kChecksum);
  crc = crc32c_update(crc, covered.data(), head);
  if (covered.size() <= erofs::sb::kChecksum) return crc;
  size_t field = std::min<size_t>(covered.size() - erofs::sb::kChecksum, sizeof kZeros);
  crc = crc32c_update(crc, kZeros, field);
  size_t rest = erofs::sb::kChecksum + field;
  return crc32c_update(crc, covered.data() + rest, covered.size() - rest);
}

void check_erofs_checksum(std::span<const uint8_t> image_head, const ErofsSuperblock& superblock,
                          std::string_view context) {
  if (!superblock.has_checksum()) return;
  uint64_t length = erofs_checksum_length(superblock);
  if (image_head.size() < erofs::kSuperblockOffset ||
      image_head.size() - erofs::kSuperblockOffset < length) {
    throw Error("{}: truncated EROFS image: the superblock checksum covers bytes past the end",
                context);
  }
  uint32_t computed = erofs_superblock_crc(image_head.subspan(erofs::kSuperblockOffset, length));
  if (computed != superblock.checksum) {
    throw Error("{}: bad EROFS superblock checksum: stored {:#010x}, computed {:#010x}", context,
                superblock.checksum, computed);
  }
}

std::string erofs_feature_names(uint32_t compat, uint32_t incompat) {
  namespace f = erofs::feature;
  static constexpr std::pair<uint32_t, const char*> kCompat[] = {
      {f::kCompatSbChksum, "sb_chksum"},
      {f::kCompatMtime, "mtime"},
      {f::kCompatXattrFilter, "xattr_filter"}};
  static constexpr std::pair<uint32_t, const char*> kIncompat[] = {
      {f::kIncompatZeroPadding, "zero_padding"},     {f::kIncompatComprCfgs, "compr_cfgs"},
      {f::kIncompatChunkedFile, "chunked_file"},     {f::kIncompatDeviceTable, "device_table"},
      {f::kIncompatZtailpacking, "ztailpacking"},    {f::kIncompatFragments, "fragments"},
      {f::kIncompatXattrPrefixes, "xattr_prefixes"}, {f::kIncompat48Bit, "48bit"}};
  std::string out;
  auto add = [&out](const char* name) {
    if (!out.empty()) out += ',';
    out += name;
  };
  for (auto [bit, name] : kCompat) {
    if (compat & bit) add(name);
  }
  for (auto [bit, name] : kIncompat) {
    if (incompat & bit) add(name);
  }
  return out;
}

}  // namespace evmdk::ondisk
