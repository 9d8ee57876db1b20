// libFuzzer target for the shared EROFS layer (common/include/evmdk/ondisk/erofs.h): the
// superblock parser, the device table and slot parsers and the checksum check, on the image
// bytes as given (superblock at byte 1024). Whatever is accepted must be self-consistent and
// nothing may read outside the input.
#include <cstddef>
#include <cstdint>
#include <span>

#include "evmdk/error.h"
#include "evmdk/ondisk/erofs.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace ondisk = evmdk::ondisk;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> image(data, size);
  std::span<const uint8_t> superblock = size > ondisk::erofs::kSuperblockOffset
                                            ? image.subspan(ondisk::erofs::kSuperblockOffset)
                                            : std::span<const uint8_t>();
  // The magic check never reads past a short span.
  bool magic = ondisk::has_erofs_magic(superblock);
  try {
    ondisk::ErofsSuperblock sb = ondisk::parse_erofs_superblock(superblock, "fuzz");
    check(magic, "a parsed superblock has the magic");
    check(sb.blkszbits >= 9 && sb.blkszbits <= 16, "block size bits in the format's range");
    check(sb.blocks < (uint64_t{1} << 48), "blocks fit 48 bits");
    check(sb.wide_addresses() || sb.blocks <= UINT32_MAX, "blocks fit 32 bits without 48BIT");
    check(sb.fs_size() >> sb.blkszbits == sb.blocks, "fs_size does not overflow");
    check(sb.device_table_size() <= 65535u * 128u, "the table size is bounded by u16 slots");
    (void)ondisk::erofs_feature_names(sb.feature_compat, sb.feature_incompat);
    (void)ondisk::erofs_printable(sb.volume_name);
    // Narrower limits refuse at least what the wide ones refuse.
    try {
      auto narrow = ondisk::parse_erofs_superblock(superblock, "fuzz", {9, 12});
      check(narrow == sb, "limits change acceptance, not the fields");
    } catch (const evmdk::Error&) {
      check(sb.blkszbits > 12, "only a block size above the limit is refused");
    }
    try {
      ondisk::check_erofs_checksum(image, sb, "fuzz");
    } catch (const evmdk::Error&) {}
    uint64_t offset = sb.device_table_offset();
    if (offset <= size) {
      try {
        auto slots = ondisk::parse_erofs_device_table(image.subspan(offset), sb, "fuzz");
        check(slots.size() == sb.extra_devices, "every announced slot is decoded");
        for (const auto& slot : slots) {
          check(slot.tag.size() <= 64, "a tag is at most 64 bytes");
          check(sb.wide_addresses() ||
                    (slot.blocks <= UINT32_MAX && slot.mapped_blkaddr <= UINT32_MAX),
                "32-bit slots without 48BIT");
        }
      } catch (const evmdk::Error&) {}
    }
  } catch (const evmdk::Error&) {}
  // Any bytes as one slot, narrow and wide.
  for (bool wide : {false, true}) {
    try {
      auto slot = ondisk::parse_erofs_device_slot(image, wide, "fuzz");
      check(size >= 128, "a slot needs 128 bytes");
      check(wide || slot.blocks <= UINT32_MAX, "narrow slot blocks fit 32 bits");
    } catch (const evmdk::Error&) {
      check(size < 128, "only a short slot is refused");
    }
  }
  return 0;
}
