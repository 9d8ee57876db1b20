// The on-disk format layer against real tools' output: EROFS superblocks and device tables
// from mkfs.erofs (1.5 here, plus images erofs-utils 1.8 and containerd's differ made, in
// tests/common/data), dm-verity superblocks from veritysetup, and GPTs from sgdisk read back
// by sfdisk. Hostile variations are derived from the real bytes.
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/ondisk/erofs.h"
#include "evmdk/ondisk/gpt.h"
#include "evmdk/ondisk/verity.h"
#include "evmdk/uuid.h"
#include "test_support.h"

namespace evmdk::ondisk {
namespace {

using ::testing::HasSubstr;

std::string data_file(const std::string& name) {
  return test::read_file(test::source_dir() + "/tests/common/data/" + name);
}

std::span<const uint8_t> superblock_of(const std::string& image) {
  return byte_view(image).subspan(erofs::kSuperblockOffset);
}

using test::error_of;

void put(std::string& bytes, size_t offset, uint64_t value, size_t width) {
  for (size_t i = 0; i < width; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
}

// Recomputes the superblock checksum after a patch, with the shared CRC32C.
void fix_checksum(std::string& image) {
  auto sb = parse_erofs_superblock(superblock_of(image), "patched");
  uint32_t crc = erofs_superblock_crc(
      byte_view(image).subspan(erofs::kSuperblockOffset, erofs_checksum_length(sb)));
  put(image, erofs::kSuperblockOffset + erofs::sb::kChecksum, crc, 4);
}

TEST(Endian, LoadsAndStoresLittleEndianAndChecksSpans) {
  uint8_t bytes[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88};
  EXPECT_EQ(load_le16(bytes), 0x0201);
  EXPECT_EQ(load_le32(bytes), 0x04030201u);
  EXPECT_EQ(load_le64(bytes), 0x8807060504030201ull);
  uint8_t out[8] = {};
  store_le64(out, 0x8807060504030201ull);
  EXPECT_EQ(std::memcmp(out, bytes, 8), 0);
  std::span<const uint8_t> view(bytes);
  EXPECT_EQ(load_le32(view, 4), 0x88070605u);
  EXPECT_THAT(error_of([&] { (void)load_le32(view, 5); }), HasSubstr("outside a 8-byte buffer"));
  EXPECT_THAT(error_of([&] { (void)load_le16(view, SIZE_MAX); }), HasSubstr("outside"));
}

class ErofsImages : public ::testing::Test {
 protected:
  void SetUp() override { EVMDK_REQUIRE_TOOLS("mkfs.erofs", "dump.erofs"); }
  test::TempDir temp;
};

// dump.erofs -s's "Key:   value" lines.
std::map<std::string, std::string> dump_fields(const std::string& image) {
  auto result = test::run({"dump.erofs", "-s", image});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::map<std::string, std::string> out;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(line.find_first_not_of(" \t", colon + 1));
    while (!value.empty() && value.back() == ' ') value.pop_back();
    out[line.substr(0, colon)] = value;
  }
  return out;
}

TEST_F(ErofsImages, SuperblockOfMkfsErofsMatchesDumpErofs) {
  test::make_tree(temp / "tree", {{"etc/hello", "hello\n"}, {"big", std::string(20000, 'x')}});
  std::string path = temp / "layer.erofs";
  test::make_erofs(temp / "tree", path, "01234567-89ab-cdef-0123-456789abcdef");
  std::string image = test::read_file(path);
  auto fields = dump_fields(path);

  ErofsSuperblock sb = parse_erofs_superblock(superblock_of(image), path);
  EXPECT_EQ(sb.blkszbits, 12);
  EXPECT_EQ(sb.block_size(), 4096u);
  EXPECT_EQ(std::to_string(sb.blocks), fields["Filesystem blocks"]);
  EXPECT_EQ(sb.fs_size(), image.size());
  EXPECT_EQ(format_uuid(sb.uuid), fields["Filesystem UUID"]);
  EXPECT_EQ(format_uuid(sb.uuid), "01234567-89ab-cdef-0123-456789abcdef");
  EXPECT_TRUE(sb.has_checksum()) << "mkfs.erofs writes sb_csum by default";
  EXPECT_FALSE(sb.has_device_table());
  EXPECT_EQ(sb.extra_devices, 0);
  EXPECT_EQ(sb.unknown_incompat(), 0u);
  EXPECT_EQ(sb.dirblkbits, 0);
  EXPECT_THAT(erofs_feature_names(sb.feature_compat, sb.feature_incompat), HasSubstr("sb_chksum"));
  EXPECT_TRUE(has_erofs_magic(superblock_of(image)));
  check_erofs_checksum(byte_view(image), sb, path);  // mkfs.erofs's CRC is the one computed here

  // A flipped byte inside the checksummed range is caught, naming the image.
  std::string damaged = image;
  damaged[erofs::kSuperblockOffset + 200] ^= 0x5a;
  EXPECT_THAT(error_of([&] { check_erofs_checksum(byte_view(damaged), sb, "img"); }),
              HasSubstr("img: bad EROFS superblock checksum"));
  // A head shorter than the checksummed range is refused, not read past.
  EXPECT_THAT(error_of([&] { check_erofs_checksum(byte_view(image).first(2000), sb, "img"); }),
              HasSubstr("superblock checksum covers bytes past the end"));
  // dump.erofs still accepts the image after a patch + fix_checksum: the CRC is the kernel's.
  std::string renamed = image;
  renamed[erofs::kSuperblockOffset + erofs::sb::kVolumeName] = 'v';
  fix_checksum(renamed);
  test::write_file(temp / "renamed.erofs", renamed);
  EXPECT_EQ(test::run({"fsck.erofs", temp / "renamed.erofs"}).exit_code, 0);
  EXPECT_EQ(erofs_printable(parse_erofs_superblock(superblock_of(renamed), "r").volume_name), "v");
}

TEST_F(ErofsImages, HostileSuperblocksAreRefusedNamingTheImage) {
  test::make_tree(temp / "tree", {{"a", "a"}});
  std::string path = temp / "layer.erofs";
  test::make_erofs(temp / "tree", path);
  const std::string image = test::read_file(path);

  EXPECT_THAT(error_of([&] { parse_erofs_superblock(superblock_of(image).first(127), "L"); }),
              HasSubstr("L: not an EROFS image: 127 superblock bytes"));
  EXPECT_THAT(error_of([&] { parse_erofs_superblock({}, "L"); }), HasSubstr("not an EROFS image"));
  EXPECT_FALSE(has_erofs_magic(superblock_of(image).first(3)));

  std::string other = image;
  other[erofs::kSuperblockOffset] = 0;
  EXPECT_FALSE(has_erofs_magic(superblock_of(other)));
  EXPECT_THAT(
      error_of([&] { parse_erofs_superblock(superblock_of(other), "L"); }),
      HasSubstr("L: not an EROFS image (magic 0xe0f5e100 at byte 1024, expected 0xe0f5e1e2)"));

  for (unsigned bits : {0u, 8u, 17u, 255u}) {
    std::string patched = image;
    patched[erofs::kSuperblockOffset + erofs::sb::kBlkszBits] = static_cast<char>(bits);
    EXPECT_THAT(
        error_of([&] { parse_erofs_superblock(superblock_of(patched), "L"); }),
        HasSubstr(fmt::format("unsupported EROFS block size bits {} (supported 9..16)", bits)));
  }
  // The host prober's narrower range (the kernel's page size) comes through the limits.
  std::string big = image;
  big[erofs::kSuperblockOffset + erofs::sb::kBlkszBits] = 16;
  EXPECT_EQ(parse_erofs_superblock(superblock_of(big), "L").block_size(), 65536u);
  EXPECT_THAT(error_of([&] {
                parse_erofs_superblock(superblock_of(big), "L", {9, 12});
              }),
              HasSubstr("unsupported EROFS block size bits 16 (supported 9..12)"));
  // Unknown incompatible bits are decoded, for the caller to refuse.
  std::string unknown = image;
  put(unknown, erofs::kSuperblockOffset + erofs::sb::kFeatureIncompat, 0x10000, 4);
  EXPECT_EQ(parse_erofs_superblock(superblock_of(unknown), "L").unknown_incompat(), 0x10000u);
}

// 48BIT images keep blocks bits 32..47 at byte 14: every reader sees the whole count now.
TEST_F(ErofsImages, WideBlockCountsAreRead) {
  test::make_tree(temp / "tree", {{"a", "a"}});
  std::string path = temp / "layer.erofs";
  test::make_erofs(temp / "tree", path);
  std::string image = test::read_file(path);
  uint64_t blocks = parse_erofs_superblock(superblock_of(image), "L").blocks;
  put(image, erofs::kSuperblockOffset + erofs::sb::kBlocksHi, 0xABCD, 2);
  // Without 48BIT byte 14 is the root nid, not part of the count.
  EXPECT_EQ(parse_erofs_superblock(superblock_of(image), "L").blocks, blocks);
  uint32_t incompat =
      load_le32(image.data() + erofs::kSuperblockOffset + erofs::sb::kFeatureIncompat);
  put(image, erofs::kSuperblockOffset + erofs::sb::kFeatureIncompat,
      incompat | erofs::feature::kIncompat48Bit, 4);
  auto wide = parse_erofs_superblock(superblock_of(image), "L");
  EXPECT_EQ(wide.blocks, (uint64_t{0xABCD} << 32) | blocks);
  EXPECT_EQ(wide.fs_size(), wide.blocks << 12);  // 60 bits: no overflow
  // The largest count with the largest block size still fits 64 bits.
  put(image, erofs::kSuperblockOffset + erofs::sb::kBlocks, 0xFFFFFFFF, 4);
  put(image, erofs::kSuperblockOffset + erofs::sb::kBlocksHi, 0xFFFF, 2);
  image[erofs::kSuperblockOffset + erofs::sb::kBlkszBits] = 16;
  auto widest = parse_erofs_superblock(superblock_of(image), "L");
  EXPECT_EQ(widest.blocks, (uint64_t{1} << 48) - 1);
  EXPECT_EQ(widest.fs_size(), ((uint64_t{1} << 48) - 1) << 16);
}

// erofs-utils 1.8's rebuild mode (fsmeta over three layers): the slots name each layer's
// block count, laid end to end after the fsmeta's own block.
TEST(ErofsDeviceTable, ErofsUtils18FsmetaSlotsMatchTheLayers) {
  std::string fsmeta = data_file("erofs-1.8-fsmeta.erofs");
  ErofsSuperblock sb = parse_erofs_superblock(superblock_of(fsmeta), "fsmeta");
  check_erofs_checksum(byte_view(fsmeta), sb, "fsmeta");
  ASSERT_TRUE(sb.has_device_table());
  ASSERT_EQ(sb.extra_devices, 3);
  auto table = byte_view(fsmeta).subspan(sb.device_table_offset());
  auto slots = parse_erofs_device_table(table, sb, "fsmeta");
  ASSERT_EQ(slots.size(), 3u);
  uint64_t next = sb.blocks;
  const char* layers[] = {"top", "middle", "base"};
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(layers[i]);
    std::string layer = data_file(fmt::format("erofs-1.8-{}.erofs", layers[i]));
    auto layer_sb = parse_erofs_superblock(superblock_of(layer), layers[i]);
    EXPECT_EQ(slots[i].blocks, layer_sb.blocks);
    EXPECT_EQ(slots[i].blocks * 4096, layer.size());
    EXPECT_EQ(slots[i].mapped_blkaddr, next);
    EXPECT_EQ(slots[i].tag.size(), 32u);  // erofs-utils writes the layer's digest as hex
    next += slots[i].blocks;
    EXPECT_EQ(parse_erofs_device_slot(table.subspan(i * 128), false, "fsmeta"), slots[i]);
  }
  // A table cut short is refused, not read past.
  EXPECT_THAT(error_of([&] { parse_erofs_device_table(table.first(300), sb, "fsmeta"); }),
              HasSubstr("fsmeta: EROFS device table truncated: 300 bytes for 3 slots"));
  EXPECT_THAT(error_of([&] { parse_erofs_device_slot(table.first(127), false, "fsmeta"); }),
              HasSubstr("fsmeta: EROFS device slot truncated"));
  // Extra devices without the DEVICE_TABLE feature are a contradiction.
  ErofsSuperblock without = sb;
  without.feature_incompat &= ~erofs::feature::kIncompatDeviceTable;
  EXPECT_THAT(error_of([&] { parse_erofs_device_table(table, without, "fsmeta"); }),
              HasSubstr("lists 3 extra devices but no device table feature"));
}

// containerd's tar-index layers: 512-byte blocks, a one-slot table mapping the tar in the
// same file, no checksum.
TEST(ErofsDeviceTable, ContainerdTarIndexLayer) {
  std::string layer = data_file("containerd-tarindex-512b.erofs");
  ErofsSuperblock sb = parse_erofs_superblock(superblock_of(layer), "tarindex");
  EXPECT_EQ(sb.blkszbits, 9);
  EXPECT_EQ(erofs_checksum_length(sb), 512u);
  check_erofs_checksum(byte_view(layer), sb, "tarindex");
  auto slots =
      parse_erofs_device_table(byte_view(layer).subspan(sb.device_table_offset()), sb, "tarindex");
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_EQ(slots[0].tag, "");
  // The tar follows the index in the same file (its end-of-archive padding after the slot).
  EXPECT_EQ(slots[0].mapped_blkaddr, sb.blocks);
  EXPECT_GT(slots[0].blocks, 0u);
  EXPECT_LE((slots[0].mapped_blkaddr + slots[0].blocks) * 512, layer.size());
}

TEST_F(ErofsImages, BlobDeviceTableOfMkfsErofs15) {
  test::make_tree(temp / "tree", {{"data", std::string(3 * 4096, 'd')}});
  std::string meta = temp / "meta.erofs";
  auto made = test::run({"mkfs.erofs", "-T0", "--chunksize=4096", "--blobdev=" + (temp / "blob"),
                         meta, temp / "tree"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::string image = test::read_file(meta);
  auto sb = parse_erofs_superblock(superblock_of(image), meta);
  check_erofs_checksum(byte_view(image), sb, meta);
  ASSERT_EQ(sb.extra_devices, 1);
  auto slots =
      parse_erofs_device_table(byte_view(image).subspan(sb.device_table_offset()), sb, meta);
  ASSERT_EQ(slots.size(), 1u);
  // 1.5 leaves blocks/mapped_blkaddr 0; with 48BIT the high halves join in.
  EXPECT_EQ(slots[0].blocks, 0u);
  std::string slot(128, '\0');
  put(slot, erofs::slot::kBlocks, 7, 4);
  put(slot, erofs::slot::kMappedBlkaddr, 9, 4);
  put(slot, erofs::slot::kBlocksHi, 1, 2);
  put(slot, erofs::slot::kMappedBlkaddrHi, 2, 2);
  EXPECT_EQ(parse_erofs_device_slot(byte_view(slot), false, "s").blocks, 7u);
  auto wide = parse_erofs_device_slot(byte_view(slot), true, "s");
  EXPECT_EQ(wide.blocks, (uint64_t{1} << 32) | 7);
  EXPECT_EQ(wide.mapped_blkaddr, (uint64_t{2} << 32) | 9);
  slot[0] = 'a';
  slot[1] = '\x01';
  slot[2] = 'b';
  EXPECT_EQ(parse_erofs_device_slot(byte_view(slot), false, "s").tag, "a?b");
}

// ---- dm-verity ----

std::map<std::string, std::string> verity_dump(const std::string& path, uint64_t hash_offset) {
  auto result =
      test::run({"veritysetup", "dump", "--hash-offset=" + std::to_string(hash_offset), path});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::map<std::string, std::string> out;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto start = line.find_first_not_of(" \t", colon + 1);
    out[line.substr(0, colon)] = start == std::string::npos ? "" : line.substr(start);
  }
  return out;
}

TEST(VeritySuperblock, VeritysetupFormatParsesAndSerialisesBitIdentically) {
  EVMDK_REQUIRE_TOOLS("veritysetup");
  test::TempDir temp;
  struct Case {
    std::vector<std::string> args;
    uint64_t data_bytes;
  };
  std::vector<Case> cases{
      {{"--salt=00112233", "--uuid=12345678-1234-1234-1234-123456789abc"}, 1 << 20},
      {{"--hash=sha512", "--salt=-", "--data-block-size=512", "--hash-block-size=1024",
        "--format=0"},
       64 << 10},
      {{"--salt=" + std::string(512, 'f')}, 8192}};
  for (const auto& c : cases) {
    SCOPED_TRACE(fmt::format("{}", fmt::join(c.args, " ")));
    std::string path = temp / "v.img";
    test::write_file(path, std::string(c.data_bytes, 'q'));
    std::vector<std::string> argv{"veritysetup", "format",
                                  "--hash-offset=" + std::to_string(c.data_bytes)};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.push_back(path);
    argv.push_back(path);
    auto formatted = test::run(argv);
    ASSERT_EQ(formatted.exit_code, 0) << formatted.err;
    auto dump = verity_dump(path, c.data_bytes);
    std::string bytes = test::read_file(path).substr(c.data_bytes, verity::kSuperblockSize);
    VeritySuperblock sb = parse_verity_superblock(byte_view(bytes), "v.img");
    EXPECT_EQ(format_uuid(sb.uuid), dump["UUID"]);
    EXPECT_EQ(std::to_string(sb.hash_type), dump["Hash type"]);
    EXPECT_EQ(std::to_string(sb.data_blocks), dump["Data blocks"]);
    EXPECT_EQ(std::to_string(sb.data_block_size), dump["Data block size"]);
    EXPECT_EQ(std::to_string(sb.hash_block_size), dump["Hash block size"]);
    EXPECT_EQ(sb.algorithm, dump["Hash algorithm"]);
    std::string salt_hex;
    for (uint8_t b : sb.salt) salt_hex += fmt::format("{:02x}", b);
    EXPECT_EQ(salt_hex.empty() ? "-" : salt_hex, dump["Salt"]);
    auto again = serialize_verity_superblock(sb);
    EXPECT_EQ(std::string(again.begin(), again.end()), bytes);
  }
}

TEST(VeritySuperblock, HostileFieldsAreRefused) {
  VeritySuperblock good;
  good.data_blocks = 16;
  good.salt = {1, 2, 3};
  auto bytes = serialize_verity_superblock(good);
  EXPECT_EQ(parse_verity_superblock(bytes, "sb"), good);
  auto refused = [&](size_t offset, uint64_t value, size_t width) {
    std::string patched(bytes.begin(), bytes.end());
    put(patched, offset, value, width);
    return error_of([&] { parse_verity_superblock(byte_view(patched), "sb"); });
  };
  EXPECT_THAT(refused(0, 'V', 1), HasSubstr("sb: no dm-verity superblock"));
  EXPECT_THAT(refused(verity::sb::kVersion, 2, 4),
              HasSubstr("unsupported dm-verity superblock version 2"));
  EXPECT_THAT(refused(verity::sb::kHashType, 2, 4), HasSubstr("unsupported dm-verity hash type 2"));
  EXPECT_THAT(refused(verity::sb::kDataBlockSize, 4095, 4),
              HasSubstr("invalid data block size 4095"));
  EXPECT_THAT(refused(verity::sb::kHashBlockSize, 1u << 21, 4),
              HasSubstr("invalid hash block size"));
  EXPECT_THAT(refused(verity::sb::kDataBlocks, 0, 8), HasSubstr("says 0 data blocks"));
  EXPECT_THAT(refused(verity::sb::kSaltSize, 257, 2),
              HasSubstr("salt size 257 is larger than 256"));
  EXPECT_THAT(refused(verity::sb::kAlgorithm, 0x35646d, 4), HasSubstr("'md5' is not allowed"));
  EXPECT_THAT(refused(verity::sb::kAlgorithm, 0, 1), HasSubstr("invalid hash algorithm name ''"));
  EXPECT_THAT(error_of([&] { parse_verity_superblock(std::span(bytes).first(511), "sb"); }),
              HasSubstr("sb: dm-verity superblock truncated"));
  VeritySuperblock long_name = good;
  long_name.algorithm = std::string(32, 'a');
  EXPECT_THAT(error_of([&] { serialize_verity_superblock(long_name); }),
              HasSubstr("invalid hash algorithm name"));
}

// ---- GPT ----

TEST(Gpt, SgdiskTablesDecodeAsSfdiskReadsThem) {
  EVMDK_REQUIRE_TOOLS("sgdisk", "sfdisk");
  test::TempDir temp;
  std::string path = temp / "disk.img";
  test::write_file(path, "");
  ASSERT_EQ(::truncate(path.c_str(), 8 << 20), 0);
  auto made =
      test::run({"sgdisk", "-U", "11111111-2222-3333-4444-555555555555", "-n", "1:2048:4095", "-c",
                 "1:layer-one", "-u", "1:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "-t", "1:8300",
                 "-n", "2:4096:6143", "-A", "2:set:60", path});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto listed = test::run({"sfdisk", "--json", path});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  auto table = nlohmann::json::parse(listed.out)["partitiontable"];
  const std::string disk = test::read_file(path);
  auto sector = [&](uint64_t lba) { return byte_view(disk).subspan(lba * 512, 512); };
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };

  EXPECT_TRUE(is_protective_mbr(sector(0)));
  auto mbr = encode_protective_mbr(disk.size() / 512);
  EXPECT_TRUE(is_protective_mbr(mbr));
  EXPECT_EQ(load_le32(mbr.data() + 446 + 8), load_le32(disk.data() + 446 + 8));    // first LBA
  EXPECT_EQ(load_le32(mbr.data() + 446 + 12), load_le32(disk.data() + 446 + 12));  // size

  uint64_t last = disk.size() / 512 - 1;
  GptHeader primary = parse_gpt_header(sector(1), 1, "disk", "primary");
  GptHeader backup = parse_gpt_header(sector(last), last, "disk", "backup");
  EXPECT_EQ(format_guid(primary.disk_guid), lower(table["id"]));
  EXPECT_EQ(primary.first_usable_lba, table["firstlba"].get<uint64_t>());
  EXPECT_EQ(primary.last_usable_lba, table["lastlba"].get<uint64_t>());
  EXPECT_EQ(primary.alternate_lba, last);
  EXPECT_EQ(backup.alternate_lba, 1u);
  EXPECT_EQ(primary.entry_count, 128u);
  // Re-encoding gives sgdisk's bytes (and its CRC).
  auto encoded = encode_gpt_header(primary);
  EXPECT_TRUE(std::equal(encoded.begin(), encoded.end(), sector(1).begin()));

  auto entries = byte_view(disk).subspan(primary.entries_lba * 512, 128 * 128);
  check_gpt_entries_crc(entries, primary, "disk", "primary");
  const auto& partitions = table["partitions"];
  for (size_t i = 0; i < partitions.size(); ++i) {
    SCOPED_TRACE(i);
    GptEntry entry = decode_gpt_entry(entries.subspan(i * 128), "disk");
    EXPECT_TRUE(entry.used());
    EXPECT_EQ(entry.first_lba, partitions[i]["start"].get<uint64_t>());
    EXPECT_EQ(entry.last_lba - entry.first_lba + 1, partitions[i]["size"].get<uint64_t>());
    EXPECT_EQ(format_guid(entry.type), lower(partitions[i]["type"]));
    EXPECT_EQ(format_guid(entry.unique), lower(partitions[i]["uuid"]));
    EXPECT_EQ(entry.name, partitions[i].value("name", ""));
    std::array<uint8_t, 128> again{};
    encode_gpt_entry(entry, again);
    EXPECT_TRUE(std::equal(again.begin(), again.end(), entries.subspan(i * 128, 128).begin()));
  }
  EXPECT_EQ(decode_gpt_entry(entries.subspan(128), "disk").attributes, uint64_t{1} << 60);
  EXPECT_FALSE(decode_gpt_entry(entries.subspan(2 * 128), "disk").used());
  EXPECT_EQ(parse_guid(format_guid(primary.disk_guid)), primary.disk_guid);
}

TEST(Gpt, HostileHeadersAreRefusedNamingTheTable) {
  GptHeader header;
  header.my_lba = 1;
  header.alternate_lba = 99;
  header.first_usable_lba = 34;
  header.last_usable_lba = 66;
  header.entries_lba = 2;
  header.entry_count = 128;
  auto good = encode_gpt_header(header);
  EXPECT_EQ(decode_gpt_header(good, "x").header_crc, *gpt_header_crc(good, 92));
  GptHeader parsed = parse_gpt_header(good, 1, "d", "primary");
  header.header_crc = parsed.header_crc;
  EXPECT_EQ(parsed, header);

  auto refused = [&](auto patch, uint64_t lba = 1, bool fix_crc = true) {
    auto bytes = good;
    patch(bytes);
    if (fix_crc) {
      if (auto crc = gpt_header_crc(bytes, load_le32(bytes.data() + 12))) {
        store_le32(bytes.data() + 16, *crc);
      }
    }
    return error_of([&] { parse_gpt_header(bytes, lba, "d", "primary"); });
  };
  EXPECT_THAT(refused([](auto& b) { b[0] = 'X'; }), HasSubstr("d: no primary GPT header at LBA 1"));
  EXPECT_THAT(refused([](auto& b) { store_le32(b.data() + 12, 91); }),
              HasSubstr("primary GPT header size 91 is invalid"));
  EXPECT_THAT(refused([](auto& b) { store_le32(b.data() + 12, 513); }),
              HasSubstr("primary GPT header size 513 is invalid"));
  EXPECT_THAT(refused([](auto& b) { b[40] ^= 1; }, 1, false), HasSubstr("primary GPT header CRC"));
  EXPECT_THAT(refused([](auto&) {}, 7), HasSubstr("header at LBA 7 says it is at LBA 1"));
  EXPECT_THAT(refused([](auto& b) { store_le32(b.data() + 84, 256); }),
              HasSubstr("has 128 entries of 256 bytes (unsupported)"));
  EXPECT_THAT(refused([](auto& b) { store_le32(b.data() + 80, 4097); }),
              HasSubstr("(unsupported)"));
  EXPECT_THAT(refused([](auto& b) { store_le32(b.data() + 80, 0); }), HasSubstr("(unsupported)"));
  EXPECT_THAT(refused([](auto& b) { store_le64(b.data() + 48, UINT64_MAX); }),
              HasSubstr("usable range"));
  EXPECT_THAT(refused([](auto& b) { store_le64(b.data() + 40, 68); }), HasSubstr("usable range"));
  // first = last + 1: an empty, valid range.
  EXPECT_EQ(parse_gpt_header(
                [&] {
                  GptHeader empty = header;
                  empty.first_usable_lba = 67;
                  return encode_gpt_header(empty);
                }(),
                1, "d", "primary")
                .first_usable_lba,
            67u);
  EXPECT_THAT(error_of([&] { decode_gpt_header(std::span(good).first(91), "d"); }),
              HasSubstr("d: GPT header truncated"));
  EXPECT_FALSE(gpt_header_crc(good, 600));
  EXPECT_THAT(error_of([&] { decode_gpt_entry(std::span(good).first(127), "d"); }),
              HasSubstr("GPT entry truncated"));
  GptEntry named;
  named.name = std::string(37, 'n');
  std::array<uint8_t, 128> out{};
  EXPECT_THAT(error_of([&] { encode_gpt_entry(named, out); }), HasSubstr("longer than 36"));
  std::array<uint8_t, 512> entries{};
  EXPECT_THAT(error_of([&] { check_gpt_entries_crc(entries, header, "d", "backup"); }),
              HasSubstr("d: backup GPT entry array CRC"));
  EXPECT_FALSE(parse_guid("not-a-guid"));
  EXPECT_FALSE(parse_guid("0fc63daf-8483-4772-8e79-3d69d8477dez"));
}

}  // namespace
}  // namespace evmdk::ondisk
