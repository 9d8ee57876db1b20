#pragma once
// The GPT on-disk layout (UEFI specification): protective MBR, the 92-byte header and the
// 128-byte partition entries, with one decoder and one encoder of each for the host's GPT
// writer and reader and verify's raw view of a disk. Reading sectors from a file stays with
// the caller; everything here works on spans and checks their bounds.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace evmdk::ondisk {

namespace gpt {

inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint32_t kHeaderSize = 92;
inline constexpr uint32_t kEntrySize = 128;
inline constexpr uint32_t kRevision = 0x00010000;  // 1.0
inline constexpr size_t kNameChars = 36;           // UTF-16LE code units
inline constexpr std::array<char, 8> kSignature = {'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T'};
// More entries than any table written or accepted here (the host writes 128..256).
inline constexpr uint32_t kMaxEntryCount = 4096;

// Header field offsets.
namespace header {
inline constexpr size_t kSignature = 0;
inline constexpr size_t kRevision = 8;
inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kHeaderCrc = 16;
inline constexpr size_t kMyLba = 24;
inline constexpr size_t kAlternateLba = 32;
inline constexpr size_t kFirstUsableLba = 40;
inline constexpr size_t kLastUsableLba = 48;
inline constexpr size_t kDiskGuid = 56;
inline constexpr size_t kEntriesLba = 72;
inline constexpr size_t kEntryCount = 80;
inline constexpr size_t kEntrySize = 84;
inline constexpr size_t kEntriesCrc = 88;
static_assert(kEntriesCrc + 4 == gpt::kHeaderSize);
}  // namespace header

// Partition entry field offsets.
namespace entry {
inline constexpr size_t kType = 0;
inline constexpr size_t kUnique = 16;
inline constexpr size_t kFirstLba = 32;
inline constexpr size_t kLastLba = 40;
inline constexpr size_t kAttributes = 48;
inline constexpr size_t kName = 56;
static_assert(kName + 2 * gpt::kNameChars == gpt::kEntrySize);
}  // namespace entry

// Protective MBR (sector 0).
namespace mbr {
inline constexpr size_t kPartitionEntry = 446;  // first of four 16-byte entries
inline constexpr size_t kTypeOffset = 4;        // within an entry
inline constexpr size_t kFirstLbaOffset = 8;
inline constexpr size_t kSectorsOffset = 12;
inline constexpr uint8_t kProtectiveType = 0xEE;
inline constexpr size_t kBootSignature = 510;  // 0x55 0xAA
}  // namespace mbr

}  // namespace gpt

// A GUID in its canonical string byte order (as printed: 00112233-4455-6677-...). On disk the
// first three fields are little-endian (mixed-endian); guid_to_disk/guid_from_disk convert.
using Guid = std::array<uint8_t, 16>;
std::array<uint8_t, 16> guid_to_disk(const Guid& guid);
Guid guid_from_disk(std::span<const uint8_t, 16> bytes);
Guid guid_from_disk(const uint8_t* bytes);  // the 16 bytes at `bytes`
// Lower-case 8-4-4-4-12.
std::string format_guid(const Guid& guid);
// 8-4-4-4-12 hex, either case; nullopt for anything else.
std::optional<Guid> parse_guid(std::string_view text);

struct GptHeader {
  uint32_t revision = gpt::kRevision;
  uint32_t header_size = gpt::kHeaderSize;
  uint32_t header_crc = 0;  // as stored (decode); ignored by encode, which computes it
  uint64_t my_lba = 0;
  uint64_t alternate_lba = 0;
  uint64_t first_usable_lba = 0;
  uint64_t last_usable_lba = 0;
  Guid disk_guid{};
  uint64_t entries_lba = 0;
  uint32_t entry_count = 0;
  uint32_t entry_size = gpt::kEntrySize;
  uint32_t entries_crc = 0;

  bool operator==(const GptHeader&) const = default;
};

// Whether `sector` starts with "EFI PART".
bool has_gpt_signature(std::span<const uint8_t> sector);

// Every header field as stored, nothing checked but the span's size (at least 92 bytes;
// throws evmdk::Error naming `context` otherwise). For readers that must not trust a CRC (to
// pin a damaged entry to its partition).
GptHeader decode_gpt_header(std::span<const uint8_t> sector, std::string_view context);

// CRC32 of the first `header_size` bytes of `sector` with the CRC field taken as zero;
// nullopt when header_size is below 92, above 512 or beyond the span.
std::optional<uint32_t> gpt_header_crc(std::span<const uint8_t> sector, uint32_t header_size);

// A header read from LBA `lba`, checked as a strict reader must: signature, header size
// 92..512 (and within the span), header CRC, my_lba == lba, 1..4096 entries of 128 bytes, a
// usable range first..last that is empty (first = last + 1) or well-ordered. Throws
// evmdk::Error "<name>: <which> GPT header ..." (which = "primary" / "backup"):
//   "no <which> GPT header at LBA <lba>", "<which> GPT header size <n> is invalid",
//   "<which> GPT header CRC 0x... does not match 0x...",
//   "<which> GPT header at LBA <lba> says it is at LBA <n>",
//   "<which> GPT header has <n> entries of <m> bytes (unsupported)",
//   "<which> GPT header's usable range LBA <a>..<b> is invalid".
GptHeader parse_gpt_header(std::span<const uint8_t> sector, uint64_t lba, std::string_view name,
                           std::string_view which);

// One 512-byte header sector with the header CRC computed (header.header_crc is ignored;
// header_size is written as given and must be 92..512, else evmdk::Error).
std::array<uint8_t, gpt::kSectorSize> encode_gpt_header(const GptHeader& header);

struct GptEntry {
  Guid type{};
  Guid unique{};
  uint64_t first_lba = 0;
  uint64_t last_lba = 0;  // inclusive
  uint64_t attributes = 0;
  std::string name;  // ASCII, at most 36 characters (stored as UTF-16LE)

  bool used() const { return type != Guid{}; }
  bool operator==(const GptEntry&) const = default;
};

// Decodes one entry (`bytes` holds at least 128; throws evmdk::Error naming `context`
// otherwise). The name stops at the first NUL code unit; code units >= 0x80 become '?'.
GptEntry decode_gpt_entry(std::span<const uint8_t> bytes, std::string_view context);
// Encodes into `out` (at least 128 bytes). Throws evmdk::Error for a name longer than 36
// characters or a short span.
void encode_gpt_entry(const GptEntry& entry, std::span<uint8_t> out);

// Checks the entry array's CRC against header.entries_crc. `entries` must hold exactly
// entry_count * entry_size bytes. Throws evmdk::Error
// "<name>: <which> GPT entry array CRC 0x... does not match 0x...".
void check_gpt_entries_crc(std::span<const uint8_t> entries, const GptHeader& header,
                           std::string_view name, std::string_view which);

// A protective MBR for a disk of `total_sectors` (one 0xEE partition from LBA 1 over the
// whole disk, capped at 0xFFFFFFFF sectors).
std::array<uint8_t, gpt::kSectorSize> encode_protective_mbr(uint64_t total_sectors);
// Whether `sector` (sector 0) has the boot signature and a first partition of type 0xEE.
bool is_protective_mbr(std::span<const uint8_t> sector);

}  // namespace evmdk::ondisk
