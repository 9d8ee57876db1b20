// GPT writer/reader: round trip, CRCs, and sgdisk's opinion of what we write.
#include "evmdk/host/compose/gpt.h"

#include <fcntl.h>
#include <gmock/gmock.h>

#include "evmdk/error.h"
#include "layer_fixtures.h"

namespace evmdk::host::gpt {
namespace {

using ::testing::HasSubstr;

Table make_table(size_t partitions, uint64_t sectors_each) {
  Table table;
  table.disk_guid = parse_guid("01234567-89ab-4cde-8f01-23456789abcd");
  table.entry_count = entry_count_for(partitions);
  uint64_t lba = kFirstPartitionLba;
  for (size_t i = 0; i < partitions; ++i) {
    Guid unique = parse_guid("a0000000-0000-4000-8000-000000000000");
    unique[14] = static_cast<uint8_t>(i >> 8);
    unique[15] = static_cast<uint8_t>(i);
    table.partitions.push_back({linux_filesystem_type(), unique, lba, lba + sectors_each - 1, 0,
                                "layer-" + std::to_string(i)});
    lba += kAlignmentSectors;
  }
  table.total_sectors = lba + tail_sectors(table.entry_count);
  return table;
}

// Writes head + (sparse) middle + tail as a raw disk file.
std::string write_disk(const test::TempDir& dir, const Table& table) {
  std::string path = dir / "disk.raw";
  std::string head = render_head(table, kFirstPartitionLba);
  std::string tail = render_tail(table);
  test::write_file(path, head);
  test::write_bytes(path, (table.total_sectors - tail_sectors(table.entry_count)) * kSectorSize,
                    tail);
  return path;
}

TEST(Gpt, GuidStringAndDiskOrder) {
  Guid type = linux_filesystem_type();
  EXPECT_EQ(format_guid(type), "0fc63daf-8483-4772-8e79-3d69d8477de4");
  auto disk = guid_to_disk(type);
  EXPECT_EQ(disk[0], 0xaf);  // first field little-endian on disk
  EXPECT_EQ(disk[8], 0x8e);  // last two fields as printed
  EXPECT_EQ(guid_from_disk(disk.data()), type);
  EXPECT_THROW(parse_guid("not-a-guid"), Error);
}

TEST(Gpt, EntryCountGrowsPast128) {
  EXPECT_EQ(entry_count_for(1), 128u);
  EXPECT_EQ(entry_count_for(128), 128u);
  EXPECT_EQ(entry_count_for(129), 132u);
  EXPECT_EQ(entry_count_for(250), 252u);
  EXPECT_EQ(first_usable_lba(128), 34u);
  EXPECT_EQ(first_usable_lba(252), 65u);
}

TEST(Gpt, RoundTripsThroughTheReader) {
  test::TempDir dir;
  Table table = make_table(3, 100);
  std::string path = write_disk(dir, table);
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  Table read = read_table(fd.get(), path);
  EXPECT_EQ(read.disk_guid, table.disk_guid);
  EXPECT_EQ(read.total_sectors, table.total_sectors);
  EXPECT_EQ(read.partitions, table.partitions);
}

// A table with empty entries: each partition keeps its entry number (what Linux numbers it),
// written where that number says and read back the same.
TEST(Gpt, EmptyEntriesKeepLaterPartitionsNumbers) {
  test::TempDir dir;
  Table table = make_table(3, 100);
  table.partitions[1].number = 3;
  table.partitions[2].number = 7;
  std::string path = write_disk(dir, table);
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  Table read = read_table(fd.get(), path);
  ASSERT_EQ(read.partitions.size(), 3u);
  EXPECT_EQ(read.partition_number(0), 1u);
  EXPECT_EQ(read.partition_number(1), 3u);
  EXPECT_EQ(read.partition_number(2), 7u);
  EXPECT_EQ(read.partitions[2].name, "layer-2");
  EXPECT_EQ(read.partitions, table.partitions);

  table.partitions[2].number = 3;  // not after the one before
  EXPECT_THAT(
      [&] { render_head(table, kFirstPartitionLba); },
      ::testing::ThrowsMessage<Error>(HasSubstr("partition 3 must come after partition 3")));
  table.partitions[2].number = 129;  // past the entry array
  EXPECT_THAT([&] { render_tail(table); },
              ::testing::ThrowsMessage<Error>(HasSubstr("within the 128 entries")));
}

TEST(Gpt, ReaderCatchesACorruptEntryAndACorruptBackup) {
  test::TempDir dir;
  Table table = make_table(2, 100);
  std::string path = write_disk(dir, table);
  test::write_bytes(path, 2 * kSectorSize + kEntrySize + 60, "X");  // partition 2's name
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  EXPECT_THAT([&] { read_table(fd.get(), path); },
              ::testing::ThrowsMessage<Error>(HasSubstr("primary GPT entry array CRC")));

  path = write_disk(dir, table);
  test::write_bytes(path, (table.total_sectors - 1) * kSectorSize + 60, "X");  // backup header
  UniqueFd fd2 = open_or_throw(path, O_RDONLY);
  EXPECT_THAT([&] { read_table(fd2.get(), path); },
              ::testing::ThrowsMessage<Error>(HasSubstr("backup GPT header CRC")));
  EXPECT_NO_THROW(read_table(fd2.get(), path, /*check_backup=*/false));
}

TEST(Gpt, RefusesOverlapsAndPartitionsOutsideTheDisk) {
  Table table = make_table(2, 100);
  table.partitions[1].first_lba = table.partitions[0].last_lba;
  EXPECT_THAT([&] { render_head(table, kFirstPartitionLba); },
              ::testing::ThrowsMessage<Error>(HasSubstr("overlaps partition 1")));
  table = make_table(1, 100);
  table.partitions[0].last_lba = table.total_sectors;
  EXPECT_THAT([&] { render_tail(table); },
              ::testing::ThrowsMessage<Error>(HasSubstr("outside the usable range")));
}

TEST(Gpt, SgdiskFindsNoProblemWith250Partitions) {
  EVMDK_REQUIRE_TOOLS("sgdisk");
  test::TempDir dir;
  Table table = make_table(250, 2048);
  std::string path = write_disk(dir, table);
  auto result = test::run({"sgdisk", "-v", path});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("No problems found"));
  EXPECT_THAT(result.out + result.err, ::testing::Not(HasSubstr("Warning")));
  EXPECT_THAT(result.out + result.err, ::testing::Not(HasSubstr("Caution")));
  auto print = test::run({"sgdisk", "-p", path});
  EXPECT_THAT(print.out, HasSubstr("holds up to 252 entries"));
  EXPECT_THAT(print.out, HasSubstr(" 250 "));
}

}  // namespace
}  // namespace evmdk::host::gpt
