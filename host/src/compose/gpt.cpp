#include "evmdk/host/compose/gpt.h"

#include <algorithm>
#include <cstring>

#include "evmdk/checked_math.h"
#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host::gpt {
namespace {

constexpr char kSignature[8] = {'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T'};
constexpr uint32_t kRevision = 0x00010000;
constexpr uint32_t kHeaderSize = 92;
constexpr size_t kNameChars = 36;

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t get64(const uint8_t* p) {
  return static_cast<uint64_t>(get32(p)) | (static_cast<uint64_t>(get32(p + 4)) << 32);
}
uint8_t* bytes(std::string& s, size_t offset = 0) {
  return reinterpret_cast<uint8_t*>(s.data()) + offset;
}

void validate(const Table& table) {
  if (table.partitions.size() > table.entry_count) {
    throw Error("GPT: {} partitions do not fit an entry array of {}", table.partitions.size(),
                table.entry_count);
  }
  if (table.entry_count * kEntrySize % kSectorSize != 0 || table.entry_count < kMinEntries) {
    throw Error("GPT: entry count {} must be at least {} and fill whole sectors",
                table.entry_count, kMinEntries);
  }
  uint64_t first = first_usable_lba(table.entry_count);
  if (table.total_sectors < first + tail_sectors(table.entry_count)) {
    throw Error("GPT: a disk of {} sectors is too small for its tables", table.total_sectors);
  }
  uint64_t last = last_usable_lba(table.total_sectors, table.entry_count);
  uint64_t previous_end = 0;
  uint32_t previous_number = 0;
  for (size_t i = 0; i < table.partitions.size(); ++i) {
    const auto& p = table.partitions[i];
    const uint32_t number = table.partition_number(i);
    if (number <= previous_number || number > table.entry_count) {
      throw Error("GPT: partition {} must come after partition {} and within the {} entries",
                  number, previous_number, table.entry_count);
    }
    if (p.first_lba < first || p.last_lba > last || p.last_lba < p.first_lba) {
      throw Error("GPT: partition {} (LBA {}..{}) is outside the usable range {}..{}", number,
                  p.first_lba, p.last_lba, first, last);
    }
    if (i > 0 && p.first_lba <= previous_end) {
      throw Error("GPT: partition {} (LBA {}..{}) overlaps partition {}", number, p.first_lba,
                  p.last_lba, previous_number);
    }
    if (p.name.size() > kNameChars) {
      throw Error("GPT: partition {} name '{}' is longer than {} characters", number, p.name,
                  kNameChars);
    }
    previous_end = p.last_lba;
    previous_number = number;
  }
}

std::string render_entries(const Table& table) {
  std::string entries(table.entry_count * kEntrySize, '\0');
  for (size_t i = 0; i < table.partitions.size(); ++i) {
    const auto& p = table.partitions[i];
    uint8_t* e = bytes(entries, (table.partition_number(i) - 1) * kEntrySize);
    auto type = guid_to_disk(p.type);
    auto unique = guid_to_disk(p.unique);
    std::memcpy(e, type.data(), 16);
    std::memcpy(e + 16, unique.data(), 16);
    put64(e + 32, p.first_lba);
    put64(e + 40, p.last_lba);
    put64(e + 48, p.attributes);
    for (size_t c = 0; c < p.name.size(); ++c) {
      put16(e + 56 + 2 * c, static_cast<uint8_t>(p.name[c]));
    }
  }
  return entries;
}

// A header sector: `my_lba`, `alternate_lba`, `entries_lba` differ between primary and backup.
std::string render_header(const Table& table, uint64_t my_lba, uint64_t alternate_lba,
                          uint64_t entries_lba, uint32_t entries_crc) {
  std::string sector(kSectorSize, '\0');
  uint8_t* h = bytes(sector);
  std::memcpy(h, kSignature, 8);
  put32(h + 8, kRevision);
  put32(h + 12, kHeaderSize);
  put64(h + 24, my_lba);
  put64(h + 32, alternate_lba);
  put64(h + 40, first_usable_lba(table.entry_count));
  put64(h + 48, last_usable_lba(table.total_sectors, table.entry_count));
  auto disk_guid = guid_to_disk(table.disk_guid);
  std::memcpy(h + 56, disk_guid.data(), 16);
  put64(h + 72, entries_lba);
  put32(h + 80, table.entry_count);
  put32(h + 84, kEntrySize);
  put32(h + 88, entries_crc);
  put32(h + 16, crc32_ieee(h, kHeaderSize));
  return sector;
}

std::string protective_mbr(uint64_t total_sectors) {
  std::string mbr(kSectorSize, '\0');
  uint8_t* m = bytes(mbr);
  uint8_t* entry = m + 446;
  entry[0] = 0x00;  // not bootable
  entry[1] = 0x00;  // CHS of LBA 1: head 0, sector 2, cylinder 0
  entry[2] = 0x02;
  entry[3] = 0x00;
  entry[4] = 0xEE;  // GPT protective
  entry[5] = 0xFF;  // CHS end: past what CHS can express
  entry[6] = 0xFF;
  entry[7] = 0xFF;
  put32(entry + 8, 1);
  uint64_t size = total_sectors - 1;
  put32(entry + 12, size > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<uint32_t>(size));
  m[510] = 0x55;
  m[511] = 0xAA;
  return mbr;
}

struct ParsedHeader {
  uint64_t my_lba, alternate_lba, first_usable, last_usable, entries_lba;
  uint32_t entry_count, entry_size, entries_crc;
  Guid disk_guid;
};

// Byte offset of an LBA read from a header, refused when it does not fit 64 bits.
uint64_t lba_offset(uint64_t lba, const std::string& name, const char* what) {
  auto offset = mul_checked<uint64_t>(lba, kSectorSize);
  if (!offset) throw Error("{}: {} LBA {} is past any disk", name, what, lba);
  return *offset;
}

ParsedHeader read_header(int fd, uint64_t lba, const std::string& name, const char* which) {
  std::string sector(kSectorSize, '\0');
  pread_exact(fd, sector.data(), sector.size(), lba_offset(lba, name, which), name);
  uint8_t* h = bytes(sector);
  if (std::memcmp(h, kSignature, 8) != 0) {
    throw Error("{}: no {} GPT header at LBA {}", name, which, lba);
  }
  uint32_t header_size = get32(h + 12);
  if (header_size < kHeaderSize || header_size > kSectorSize) {
    throw Error("{}: {} GPT header size {} is invalid", name, which, header_size);
  }
  uint32_t stored = get32(h + 16);
  put32(h + 16, 0);
  uint32_t computed = crc32_ieee(h, header_size);
  if (stored != computed) {
    throw Error("{}: {} GPT header CRC {:#010x} does not match {:#010x}", name, which, stored,
                computed);
  }
  ParsedHeader parsed{get64(h + 24), get64(h + 32), get64(h + 40), get64(h + 48),
                      get64(h + 72), get32(h + 80), get32(h + 84), get32(h + 88),
                      guid_from_disk(h + 56)};
  if (parsed.my_lba != lba) {
    throw Error("{}: {} GPT header at LBA {} says it is at LBA {}", name, which, lba,
                parsed.my_lba);
  }
  if (parsed.entry_size != kEntrySize || parsed.entry_count == 0 || parsed.entry_count > 4096) {
    throw Error("{}: {} GPT header has {} entries of {} bytes (unsupported)", name, which,
                parsed.entry_count, parsed.entry_size);
  }
  // An empty usable range (first = last + 1) is a valid table without room for partitions.
  if (parsed.last_usable == UINT64_MAX || parsed.first_usable > parsed.last_usable + 1) {
    throw Error("{}: {} GPT header's usable range LBA {}..{} is invalid", name, which,
                parsed.first_usable, parsed.last_usable);
  }
  return parsed;
}

std::string read_entries(int fd, const ParsedHeader& header, const std::string& name,
                         const char* which) {
  std::string entries(static_cast<size_t>(header.entry_count) * header.entry_size, '\0');
  pread_exact(fd, entries.data(), entries.size(), lba_offset(header.entries_lba, name, which), name);
  uint32_t computed = crc32_ieee(entries.data(), entries.size());
  if (computed != header.entries_crc) {
    throw Error("{}: {} GPT entry array CRC {:#010x} does not match {:#010x}", name, which,
                header.entries_crc, computed);
  }
  return entries;
}

}  // namespace

std::string format_guid(const Guid& g) {
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
      g[14], g[15]);
}

Guid parse_guid(const std::string& text) {
  Guid guid{};
  size_t out = 0;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  static constexpr size_t kDashes[] = {8, 13, 18, 23};
  if (text.size() != 36) throw Error("'{}' is not a GUID", text);
  for (size_t i = 0; i < text.size();) {
    if (std::find(std::begin(kDashes), std::end(kDashes), i) != std::end(kDashes)) {
      if (text[i] != '-') throw Error("'{}' is not a GUID", text);
      ++i;
      continue;
    }
    int high = hex(text[i]), low = hex(text[i + 1]);
    if (high < 0 || low < 0) throw Error("'{}' is not a GUID", text);
    guid[out++] = static_cast<uint8_t>(high * 16 + low);
    i += 2;
  }
  return guid;
}

std::array<uint8_t, 16> guid_to_disk(const Guid& g) {
  return {g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6],
          g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]};
}

Guid guid_from_disk(const uint8_t* d) {
  return {d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6],
          d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]};
}

uint32_t Table::partition_number(size_t index) const {
  const uint32_t number = partitions.at(index).number;
  return number != 0 ? number : static_cast<uint32_t>(index + 1);
}

Guid linux_filesystem_type() { return parse_guid("0fc63daf-8483-4772-8e79-3d69d8477de4"); }

uint32_t entry_count_for(size_t partitions) {
  constexpr uint32_t per_sector = kSectorSize / kEntrySize;
  uint32_t needed = static_cast<uint32_t>((partitions + per_sector - 1) / per_sector * per_sector);
  return std::max(needed, kMinEntries);
}

uint64_t entry_array_sectors(uint32_t entry_count) {
  return (static_cast<uint64_t>(entry_count) * kEntrySize + kSectorSize - 1) / kSectorSize;
}

uint64_t first_usable_lba(uint32_t entry_count) { return 2 + entry_array_sectors(entry_count); }

uint64_t tail_sectors(uint32_t entry_count) { return entry_array_sectors(entry_count) + 1; }

uint64_t last_usable_lba(uint64_t total_sectors, uint32_t entry_count) {
  return total_sectors - tail_sectors(entry_count) - 1;
}

std::string render_head(const Table& table, uint64_t head_sectors) {
  validate(table);
  if (head_sectors < first_usable_lba(table.entry_count)) {
    throw Error("GPT: a head of {} sectors cannot hold the tables", head_sectors);
  }
  std::string entries = render_entries(table);
  uint32_t entries_crc = crc32_ieee(entries.data(), entries.size());
  std::string head = protective_mbr(table.total_sectors);
  head += render_header(table, 1, table.total_sectors - 1, 2, entries_crc);
  head += entries;
  head.resize(head_sectors * kSectorSize, '\0');
  return head;
}

std::string render_tail(const Table& table) {
  validate(table);
  std::string entries = render_entries(table);
  uint32_t entries_crc = crc32_ieee(entries.data(), entries.size());
  uint64_t last = table.total_sectors - 1;
  uint64_t entries_lba = last - entry_array_sectors(table.entry_count);
  return entries + render_header(table, last, 1, entries_lba, entries_crc);
}

Table read_table(int fd, const std::string& name, bool check_backup) {
  std::string mbr(kSectorSize, '\0');
  pread_exact(fd, mbr.data(), mbr.size(), 0, name);
  if (static_cast<uint8_t>(mbr[510]) != 0x55 || static_cast<uint8_t>(mbr[511]) != 0xAA ||
      static_cast<uint8_t>(mbr[446 + 4]) != 0xEE) {
    throw Error("{}: no protective MBR", name);
  }
  ParsedHeader primary = read_header(fd, 1, name, "primary");
  std::string entries = read_entries(fd, primary, name, "primary");
  Table table;
  table.disk_guid = primary.disk_guid;
  table.total_sectors = primary.alternate_lba + 1;
  table.entry_count = primary.entry_count;
  for (uint32_t i = 0; i < primary.entry_count; ++i) {
    const uint8_t* e = bytes(entries, i * kEntrySize);
    Partition p;
    p.type = guid_from_disk(e);
    if (p.type == Guid{}) continue;
    p.unique = guid_from_disk(e + 16);
    p.first_lba = get64(e + 32);
    p.last_lba = get64(e + 40);
    // Every reader sizes the partition as last - first + 1 sectors: keep that meaningful.
    if (p.first_lba < primary.first_usable || p.first_lba > p.last_lba ||
        p.last_lba > primary.last_usable) {
      throw Error("{}: GPT entry {} spans LBA {}..{}, outside the usable range {}..{}", name,
                  i + 1, p.first_lba, p.last_lba, primary.first_usable, primary.last_usable);
    }
    p.attributes = get64(e + 48);
    for (size_t c = 0; c < kNameChars; ++c) {
      uint16_t ch = static_cast<uint16_t>(e[56 + 2 * c] | (e[57 + 2 * c] << 8));
      if (ch == 0) break;
      p.name += ch < 0x80 ? static_cast<char>(ch) : '?';
    }
    // After an empty entry the position no longer tells the number: keep it.
    if (i != table.partitions.size()) p.number = i + 1;
    table.partitions.push_back(std::move(p));
  }
  if (check_backup) {
    ParsedHeader backup = read_header(fd, primary.alternate_lba, name, "backup");
    std::string backup_entries = read_entries(fd, backup, name, "backup");
    if (backup.alternate_lba != 1 || backup_entries != entries ||
        backup.disk_guid != primary.disk_guid || backup.first_usable != primary.first_usable ||
        backup.last_usable != primary.last_usable) {
      throw Error("{}: backup GPT does not match the primary", name);
    }
  }
  return table;
}

}  // namespace evmdk::host::gpt
