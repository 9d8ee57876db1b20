#include "evmdk/ondisk/gpt.h"

#include <algorithm>
#include <cstring>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/uuid.h"

namespace evmdk::ondisk {

std::array<uint8_t, 16> guid_to_disk(const Guid& g) {
  return {g[3], g[2], g[1],  g[0],  g[5],  g[4],  g[7],  g[6],
          g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]};
}

Guid guid_from_disk(const uint8_t* d) {
  return {d[3], d[2], d[1],  d[0],  d[5],  d[4],  d[7],  d[6],
          d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]};
}

Guid guid_from_disk(std::span<const uint8_t, 16> bytes) { return guid_from_disk(bytes.data()); }

std::string format_guid(const Guid& guid) { return format_uuid(guid); }

std::optional<Guid> parse_guid(std::string_view text) { return parse_uuid_text(text); }

bool has_gpt_signature(std::span<const uint8_t> sector) {
  return sector.size() >= gpt::kSignature.size() &&
         std::memcmp(sector.data(), gpt::kSignature.data(), gpt::kSignature.size()) == 0;
}

GptHeader decode_gpt_header(std::span<const uint8_t> sector, std::string_view context) {
  if (sector.size() < gpt::kHeaderSize) {
    throw Error("{}: GPT header truncated: {} bytes, a header has {}", context, sector.size(),
                gpt::kHeaderSize);
  }
  const uint8_t* h = sector.data();
  namespace f = gpt::header;
  GptHeader out;
  out.revision = load_le32(h + f::kRevision);
  out.header_size = load_le32(h + f::kHeaderSize);
  out.header_crc = load_le32(h + f::kHeaderCrc);
  out.my_lba = load_le64(h + f::kMyLba);
  out.alternate_lba = load_le64(h + f::kAlternateLba);
  out.first_usable_lba = load_le64(h + f::kFirstUsableLba);
  out.last_usable_lba = load_le64(h + f::kLastUsableLba);
  out.disk_guid = guid_from_disk(h + f::kDiskGuid);
  out.entries_lba = load_le64(h + f::kEntriesLba);
  out.entry_count = load_le32(h + f::kEntryCount);
  out.entry_size = load_le32(h + f::kEntrySize);
  out.entries_crc = load_le32(h + f::kEntriesCrc);
  return out;
}

std::optional<uint32_t> gpt_header_crc(std::span<const uint8_t> sector, uint32_t header_size) {
  if (header_size < gpt::kHeaderSize || header_size > gpt::kSectorSize ||
      header_size > sector.size()) {
    return std::nullopt;
  }
  // The CRC covers the header with its own CRC field zeroed.
  std::array<uint8_t, gpt::kSectorSize> copy{};
  std::memcpy(copy.data(), sector.data(), header_size);
  store_le32(copy.data() + gpt::header::kHeaderCrc, 0);
  return crc32_ieee(copy.data(), header_size);
}

GptHeader parse_gpt_header(std::span<const uint8_t> sector, uint64_t lba, std::string_view name,
                           std::string_view which) {
  if (!has_gpt_signature(sector)) throw Error("{}: no {} GPT header at LBA {}", name, which, lba);
  std::string context = fmt::format("{}: {}", name, which);
  GptHeader parsed = decode_gpt_header(sector, context);
  if (parsed.header_size < gpt::kHeaderSize || parsed.header_size > gpt::kSectorSize ||
      parsed.header_size > sector.size()) {
    throw Error("{}: {} GPT header size {} is invalid", name, which, parsed.header_size);
  }
  uint32_t computed = *gpt_header_crc(sector, parsed.header_size);
  if (parsed.header_crc != computed) {
    throw Error("{}: {} GPT header CRC {:#010x} does not match {:#010x}", name, which,
                parsed.header_crc, computed);
  }
  if (parsed.my_lba != lba) {
    throw Error("{}: {} GPT header at LBA {} says it is at LBA {}", name, which, lba,
                parsed.my_lba);
  }
  if (parsed.entry_size != gpt::kEntrySize || parsed.entry_count == 0 ||
      parsed.entry_count > gpt::kMaxEntryCount) {
    throw Error("{}: {} GPT header has {} entries of {} bytes (unsupported)", name, which,
                parsed.entry_count, parsed.entry_size);
  }
  // An empty usable range (first = last + 1) is a valid table without room for partitions.
  if (parsed.last_usable_lba == UINT64_MAX ||
      parsed.first_usable_lba > parsed.last_usable_lba + 1) {
    throw Error("{}: {} GPT header's usable range LBA {}..{} is invalid", name, which,
                parsed.first_usable_lba, parsed.last_usable_lba);
  }
  return parsed;
}

std::array<uint8_t, gpt::kSectorSize> encode_gpt_header(const GptHeader& header) {
  if (header.header_size < gpt::kHeaderSize || header.header_size > gpt::kSectorSize) {
    throw Error("GPT: header size {} is not in {}..{}", header.header_size, gpt::kHeaderSize,
                gpt::kSectorSize);
  }
  std::array<uint8_t, gpt::kSectorSize> sector{};
  uint8_t* h = sector.data();
  namespace f = gpt::header;
  std::memcpy(h + f::kSignature, gpt::kSignature.data(), gpt::kSignature.size());
  store_le32(h + f::kRevision, header.revision);
  store_le32(h + f::kHeaderSize, header.header_size);
  store_le64(h + f::kMyLba, header.my_lba);
  store_le64(h + f::kAlternateLba, header.alternate_lba);
  store_le64(h + f::kFirstUsableLba, header.first_usable_lba);
  store_le64(h + f::kLastUsableLba, header.last_usable_lba);
  auto disk_guid = guid_to_disk(header.disk_guid);
  std::memcpy(h + f::kDiskGuid, disk_guid.data(), disk_guid.size());
  store_le64(h + f::kEntriesLba, header.entries_lba);
  store_le32(h + f::kEntryCount, header.entry_count);
  store_le32(h + f::kEntrySize, header.entry_size);
  store_le32(h + f::kEntriesCrc, header.entries_crc);
  store_le32(h + f::kHeaderCrc, crc32_ieee(h, header.header_size));
  return sector;
}

GptEntry decode_gpt_entry(std::span<const uint8_t> bytes, std::string_view context) {
  if (bytes.size() < gpt::kEntrySize) {
    throw Error("{}: GPT entry truncated: {} bytes, an entry has {}", context, bytes.size(),
                gpt::kEntrySize);
  }
  const uint8_t* e = bytes.data();
  namespace f = gpt::entry;
  GptEntry out;
  out.type = guid_from_disk(e + f::kType);
  out.unique = guid_from_disk(e + f::kUnique);
  out.first_lba = load_le64(e + f::kFirstLba);
  out.last_lba = load_le64(e + f::kLastLba);
  out.attributes = load_le64(e + f::kAttributes);
  for (size_t c = 0; c < gpt::kNameChars; ++c) {
    uint16_t ch = load_le16(e + f::kName + 2 * c);
    if (ch == 0) break;
    out.name += ch < 0x80 ? static_cast<char>(ch) : '?';
  }
  return out;
}

void encode_gpt_entry(const GptEntry& entry, std::span<uint8_t> out) {
  if (out.size() < gpt::kEntrySize) {
    throw Error("GPT: {} bytes are too few for an entry of {}", out.size(), gpt::kEntrySize);
  }
  if (entry.name.size() > gpt::kNameChars) {
    throw Error("GPT: partition name '{}' is longer than {} characters", entry.name,
                gpt::kNameChars);
  }
  uint8_t* e = out.data();
  namespace f = gpt::entry;
  std::fill_n(e, gpt::kEntrySize, uint8_t{0});
  auto type = guid_to_disk(entry.type);
  auto unique = guid_to_disk(entry.unique);
  std::memcpy(e + f::kType, type.data(), type.size());
  std::memcpy(e + f::kUnique, unique.data(), unique.size());
  store_le64(e + f::kFirstLba, entry.first_lba);
  store_le64(e + f::kLastLba, entry.last_lba);
  store_le64(e + f::kAttributes, entry.attributes);
  for (size_t c = 0; c < entry.name.size(); ++c) {
    store_le16(e + f::kName + 2 * c, static_cast<uint8_t>(entry.name[c]));
  }
}

void check_gpt_entries_crc(std::span<const uint8_t> entries, const GptHeader& header,
                           std::string_view name, std::string_view which) {
  uint32_t computed = crc32_ieee(entries.data(), entries.size());
  if (computed != header.entries_crc) {
    throw Error("{}: {} GPT entry array CRC {:#010x} does not match {:#010x}", name, which,
                header.entries_crc, computed);
  }
}

std::array<uint8_t, gpt::kSectorSize> encode_protective_mbr(uint64_t total_sectors) {
  std::array<uint8_t, gpt::kSectorSize> mbr{};
  uint8_t* entry = mbr.data() + gpt::mbr::kPartitionEntry;
  entry[0] = 0x00;  // not bootable
  entry[1] = 0x00;  // CHS of LBA 1: head 0, sector 2, cylinder 0
  entry[2] = 0x02;
  entry[3] = 0x00;
  entry[gpt::mbr::kTypeOffset] = gpt::mbr::kProtectiveType;
  entry[5] = 0xFF;  // CHS end: past what CHS can express
  entry[6] = 0xFF;
  entry[7] = 0xFF;
  store_le32(entry + gpt::mbr::kFirstLbaOffset, 1);
  uint64_t size = total_sectors == 0 ? 0 : total_sectors - 1;
  store_le32(entry + gpt::mbr::kSectorsOffset,
             size > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<uint32_t>(size));
  mbr[gpt::mbr::kBootSignature] = 0x55;
  mbr[gpt::mbr::kBootSignature + 1] = 0xAA;
  return mbr;
}

bool is_protective_mbr(std::span<const uint8_t> sector) {
  return sector.size() >= gpt::kSectorSize && sector[gpt::mbr::kBootSignature] == 0x55 &&
         sector[gpt::mbr::kBootSignature + 1] == 0xAA &&
         sector[gpt::mbr::kPartitionEntry + gpt::mbr::kTypeOffset] == gpt::mbr::kProtectiveType;
}

}  // namespace evmdk::ondisk
