#pragma once
// GPT writer and reader for composed disks: protective MBR, primary header + entry array at
// the head, backup entry array + header at the tail, CRC32s (UEFI spec layout).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "evmdk/ondisk/gpt.h"

namespace evmdk::host::gpt {

inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint64_t kEntrySize = 128;
inline constexpr uint64_t kAlignmentSectors = 2048;  // 1 MiB
inline constexpr uint64_t kFirstPartitionLba = 2048;
inline constexpr uint32_t kMinEntries = 128;
// Linux reads at most DISK_MAX_PARTS - 1 = 255 partitions of a disk (block/partitions/efi.c
// stops at state->limit - 1); entries past that are ignored, so compose refuses more layers.
inline constexpr uint32_t kMaxPartitions = 255;

// A GUID in its canonical string byte order (as printed: 00112233-4455-...). On disk the
// first three fields are little-endian (mixed-endian), to_disk/from_disk convert.
// The on-disk records are common's (evmdk/ondisk/gpt.h).
using ondisk::format_guid;
using ondisk::Guid;
using ondisk::guid_from_disk;
using ondisk::guid_to_disk;
Guid parse_guid(const std::string& text);  // throws evmdk::Error

// Linux filesystem data: 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
Guid linux_filesystem_type();

struct Partition {
  Guid type{};
  Guid unique{};
  uint64_t first_lba = 0;
  uint64_t last_lba = 0;  // inclusive
  uint64_t attributes = 0;
  std::string name;  // ASCII, at most 36 characters (stored as UTF-16LE)
  // Its entry number (1-based) when that is not its place in Table::partitions, as in a table
  // read with empty entries before it; 0: partitions[N-1] is entry (partition) N.
  uint32_t number = 0;

  bool operator==(const Partition&) const = default;
};

struct Table {
  Guid disk_guid{};
  uint64_t total_sectors = 0;  // whole disk, including both GPTs
  uint32_t entry_count = kMinEntries;
  std::vector<Partition> partitions;  // in entry order; empty entries are left out

  // The partition number Linux gives partitions[index]: its entry number.
  uint32_t partition_number(size_t index) const;
};

// Entry count for n partitions: at least 128, rounded up to fill whole sectors.
uint32_t entry_count_for(size_t partitions);
// Sectors the entry array takes.
uint64_t entry_array_sectors(uint32_t entry_count);
// first/last usable LBA of a table's layout.
uint64_t first_usable_lba(uint32_t entry_count);
uint64_t last_usable_lba(uint64_t total_sectors, uint32_t entry_count);

// The first `head_sectors` sectors of the disk (MBR, header, entries, zero padding), and the
// last (entries + header) sectors. Throws evmdk::Error when partitions overlap, fall outside
// the usable range, or do not fit the entry array.
std::string render_head(const Table& table, uint64_t head_sectors);
std::string render_tail(const Table& table);
uint64_t tail_sectors(uint32_t entry_count);

// Reads and validates a GPT from a raw disk image (primary header and entries, CRCs, and the
// backup copy when `check_backup`). Throws evmdk::Error naming `name` on any problem.
Table read_table(int fd, const std::string& name, bool check_backup = true);

}  // namespace evmdk::host::gpt
