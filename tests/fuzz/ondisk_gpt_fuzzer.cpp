// libFuzzer target for the shared GPT layer (common/include/evmdk/ondisk/gpt.h): the strict
// header parser at LBA 1 and at the last LBA, the raw header and entry decoders, the entry
// array CRC check and the protective MBR check, on a disk image given as bytes. An accepted
// header re-encodes to the same bytes; an accepted entry too.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "evmdk/error.h"
#include "evmdk/ondisk/gpt.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace ondisk = evmdk::ondisk;
constexpr size_t kSector = 512;

void header_at(std::span<const uint8_t> disk, uint64_t lba, const char* which) {
  if (disk.size() / kSector <= lba) return;
  auto sector = disk.subspan(lba * kSector, kSector);
  try {
    ondisk::GptHeader header = ondisk::parse_gpt_header(sector, lba, "fuzz", which);
    check(header.my_lba == lba, "my_lba is where it was read");
    check(header.entry_size == 128 && header.entry_count >= 1 && header.entry_count <= 4096,
          "entry geometry is the supported one");
    check(header.first_usable_lba <= header.last_usable_lba + 1, "usable range is ordered");
    if (header.header_size == ondisk::gpt::kHeaderSize &&
        header.revision == ondisk::gpt::kRevision) {
      auto again = ondisk::encode_gpt_header(header);
      // Bytes past the header's own size are not part of it.
      check(std::memcmp(again.data(), sector.data(), ondisk::gpt::kHeaderSize) == 0,
            "an accepted header re-encodes to its bytes");
    }
    // The entry array, when it lies inside the input.
    uint64_t entries_bytes = uint64_t{header.entry_count} * header.entry_size;
    if (header.entries_lba < disk.size() / kSector &&
        entries_bytes <= disk.size() - header.entries_lba * kSector) {
      auto entries = disk.subspan(header.entries_lba * kSector, entries_bytes);
      try {
        ondisk::check_gpt_entries_crc(entries, header, "fuzz", which);
      } catch (const evmdk::Error&) {}
      for (uint32_t i = 0; i < header.entry_count; ++i) {
        auto entry = ondisk::decode_gpt_entry(entries.subspan(uint64_t{i} * 128, 128), "fuzz");
        check(entry.name.size() <= 36, "names are at most 36 characters");
        std::array<uint8_t, 128> encoded{};
        ondisk::encode_gpt_entry(entry, encoded);
        check(ondisk::decode_gpt_entry(encoded, "fuzz") == entry, "entries round-trip");
      }
    }
  } catch (const evmdk::Error&) {}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> disk(data, size);
  (void)ondisk::is_protective_mbr(disk);
  (void)ondisk::has_gpt_signature(disk);
  header_at(disk, 1, "primary");
  if (size >= 2 * kSector) header_at(disk, size / kSector - 1, "backup");
  try {
    auto raw = ondisk::decode_gpt_header(disk, "fuzz");
    (void)ondisk::gpt_header_crc(disk, raw.header_size);
    check(size >= 92, "a raw header needs 92 bytes");
  } catch (const evmdk::Error&) {
    check(size < 92, "only a short raw header is refused");
  }
  if (size >= 36) {
    std::string_view text(reinterpret_cast<const char*>(data), 36);
    if (auto guid = ondisk::parse_guid(text)) {
      check(ondisk::parse_guid(ondisk::format_guid(*guid)) == guid, "GUID text round-trips");
    }
  }
  return 0;
}
