#include "evmdk/host/compose/gpt.h"

#include <algorithm>
#include <cstring>

#include "evmdk/checked_math.h"
#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host::gpt {
namespace {

constexpr size_t kNameChars = ondisk::gpt::kNameChars;

ondisk::GptEntry to_entry(const Partition& p) {
  return {p.type, p.unique, p.first_lba, p.last_lba, p.attributes, p.name};
}

void validate(const Table& table) {
  if (table.partitions.size() > table.entry_count) {
    throw Error("GPT: {} partitions do not fit an entry array of {}", table.partitions.size(),
                table.entry_count);
  }
  if (table.entry_count * kEntrySize % kSectorSize != 0 || table.entry_count < kMinEntries) {
    throw Error("GPT: entry count {} must be at least {} and fill whole sectors", table.entry_count,
                kMinEntries);
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
  auto out = std::span(reinterpret_cast<uint8_t*>(entries.data()), entries.size());
  for (size_t i = 0; i < table.partitions.size(); ++i) {
    ondisk::encode_gpt_entry(to_entry(table.partitions[i]),
                             out.subspan((table.partition_number(i) - 1) * kEntrySize, kEntrySize));
  }
  return entries;
}

// A header sector: `my_lba`, `alternate_lba`, `entries_lba` differ between primary and backup.
std::string render_header(const Table& table, uint64_t my_lba, uint64_t alternate_lba,
                          uint64_t entries_lba, uint32_t entries_crc) {
  ondisk::GptHeader header;
  header.my_lba = my_lba;
  header.alternate_lba = alternate_lba;
  header.first_usable_lba = first_usable_lba(table.entry_count);
  header.last_usable_lba = last_usable_lba(table.total_sectors, table.entry_count);
  header.disk_guid = table.disk_guid;
  header.entries_lba = entries_lba;
  header.entry_count = table.entry_count;
  header.entry_size = kEntrySize;
  header.entries_crc = entries_crc;
  auto sector = ondisk::encode_gpt_header(header);
  return std::string(sector.begin(), sector.end());
}

std::string protective_mbr(uint64_t total_sectors) {
  auto sector = ondisk::encode_protective_mbr(total_sectors);
  return std::string(sector.begin(), sector.end());
}

// Byte offset of an LBA read from a header, refused when it does not fit 64 bits.
uint64_t lba_offset(uint64_t lba, const std::string& name, const char* what) {
  auto offset = mul_checked<uint64_t>(lba, kSectorSize);
  if (!offset) throw Error("{}: {} LBA {} is past any disk", name, what, lba);
  return *offset;
}

ondisk::GptHeader read_header(int fd, uint64_t lba, const std::string& name, const char* which) {
  std::array<uint8_t, kSectorSize> sector{};
  pread_exact(fd, sector.data(), sector.size(), lba_offset(lba, name, which), name);
  return ondisk::parse_gpt_header(sector, lba, name, which);
}

std::string read_entries(int fd, const ondisk::GptHeader& header, const std::string& name,
                         const char* which) {
  std::string entries(static_cast<size_t>(header.entry_count) * header.entry_size, '\0');
  pread_exact(fd, entries.data(), entries.size(), lba_offset(header.entries_lba, name, which),
              name);
  ondisk::check_gpt_entries_crc(ondisk::byte_view(entries), header, name, which);
  return entries;
}

}  // namespace

Guid parse_guid(const std::string& text) {
  auto guid = ondisk::parse_guid(text);
  if (!guid) throw Error("'{}' is not a GUID", text);
  return *guid;
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
  std::array<uint8_t, kSectorSize> mbr{};
  pread_exact(fd, mbr.data(), mbr.size(), 0, name);
  if (!ondisk::is_protective_mbr(mbr)) throw Error("{}: no protective MBR", name);
  ondisk::GptHeader primary = read_header(fd, 1, name, "primary");
  std::string entries = read_entries(fd, primary, name, "primary");
  Table table;
  table.disk_guid = primary.disk_guid;
  table.total_sectors = primary.alternate_lba + 1;
  table.entry_count = primary.entry_count;
  for (uint32_t i = 0; i < primary.entry_count; ++i) {
    ondisk::GptEntry e =
        ondisk::decode_gpt_entry(ondisk::byte_view(entries).subspan(i * kEntrySize), name);
    if (!e.used()) continue;
    // Every reader sizes the partition as last - first + 1 sectors: keep that meaningful.
    if (e.first_lba < primary.first_usable_lba || e.first_lba > e.last_lba ||
        e.last_lba > primary.last_usable_lba) {
      throw Error("{}: GPT entry {} spans LBA {}..{}, outside the usable range {}..{}", name, i + 1,
                  e.first_lba, e.last_lba, primary.first_usable_lba, primary.last_usable_lba);
    }
    Partition p{e.type, e.unique, e.first_lba, e.last_lba, e.attributes, std::move(e.name)};
    // After an empty entry the position no longer tells the number: keep it.
    if (i != table.partitions.size()) p.number = i + 1;
    table.partitions.push_back(std::move(p));
  }
  if (check_backup) {
    ondisk::GptHeader backup = read_header(fd, primary.alternate_lba, name, "backup");
    std::string backup_entries = read_entries(fd, backup, name, "backup");
    if (backup.alternate_lba != 1 || backup_entries != entries ||
        backup.disk_guid != primary.disk_guid ||
        backup.first_usable_lba != primary.first_usable_lba ||
        backup.last_usable_lba != primary.last_usable_lba) {
      throw Error("{}: backup GPT does not match the primary", name);
    }
  }
  return table;
}

}  // namespace evmdk::host::gpt
