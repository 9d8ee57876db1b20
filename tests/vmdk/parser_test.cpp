// The two readings of a descriptor (QEMU 7.2's and the VMware spec's) and the extent map.
#include "evmdk/vmdk/parser.h"

#include <gmock/gmock.h>

#include "evmdk/error.h"
#include "evmdk/vmdk/extent_map.h"
#include "test_support.h"

namespace evmdk::vmdk {
namespace {

using ::testing::HasSubstr;

const std::string kHeader =
    "# Disk DescriptorFile\nversion=1\nCID=0000abcd\nparentCID=ffffffff\n"
    "createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n";

QemuReading qemu(const std::string& extents, const std::string& header = kHeader) {
  return read_as_qemu(header + extents, "/disks/d.vmdk");
}

std::vector<std::pair<std::string, int64_t>> paths_and_sizes(const QemuReading& r) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& e : r.extents) out.emplace_back(e.path, e.sectors);
  return out;
}

TEST(QemuReading, ReadsTheWritersOutput) {
  Descriptor d;
  d.extents = {{"/a", 10, 0}, {"/b", kTwoGbExtentSectors + 1, 3}};
  QemuReading r = read_as_qemu(render(d), "/x/d.vmdk");
  ASSERT_TRUE(r.opens()) << r.open_error;
  EXPECT_EQ(r.create_type, "twoGbMaxExtentFlat");
  EXPECT_EQ(r.parent_cid, 0xffffffffu);
  ASSERT_EQ(r.extents.size(), 3u);
  EXPECT_EQ(r.extents[2].offset, int64_t(kTwoGbExtentSectors + 3));
  EXPECT_EQ(r.extents[0].line, 8u);
  EXPECT_EQ(r.total_sectors, total_sectors(d));
  EXPECT_EQ(to_descriptor(r).extents, emitted_extents(d));
}

TEST(QemuReading, BlankLineBeforeAnExtentAddsItTwice) {
  QemuReading r = qemu("RW 10 FLAT \"/a\" 0\n\nRW 20 FLAT \"/b\" 0\n");
  ASSERT_TRUE(r.opens());
  ASSERT_EQ(r.extents.size(), 3u);
  EXPECT_EQ(r.extents[1].path, "/b");
  EXPECT_EQ(r.extents[1].line, 9u);       // the blank line
  EXPECT_EQ(r.extents[1].last_line, 10u); // the extent line
  EXPECT_EQ(r.total_sectors, 50u);
  // Whitespace-only lines do the same; two blank lines add it three times.
  EXPECT_EQ(qemu(" \t\n\nRW 20 FLAT \"/b\" 0\n").extents.size(), 3u);
}

TEST(QemuReading, SkipsRdonlyNoaccessZeroAndWrongCaseAccess) {
  QemuReading r = qemu(
      "RDONLY 10 FLAT \"/a\" 0\nNOACCESS 10 FLAT \"/a\" 0\nRW 10 ZERO\nRW 10 ZERO \"/z\"\n"
      "rw 10 FLAT \"/a\" 0\nRW 10 FLAT /unquoted 0\nRW 10 FLAT '/single' 0\nRW 0 FLAT \"/a\" 0\n"
      "RW 7 FLAT \"/kept\" 0\n");
  ASSERT_TRUE(r.opens()) << r.open_error;
  EXPECT_EQ(paths_and_sizes(r), (std::vector<std::pair<std::string, int64_t>>{{"/kept", 7}}));
}

TEST(QemuReading, WrongCaseTypeAndMissingOffsetAreOpenErrors) {
  EXPECT_THAT(qemu("RW 10 flat \"/a\" 0\n").open_error, HasSubstr("Invalid extent line: RW 10 flat"));
  EXPECT_THAT(qemu("RW 10 FLAT \"/a\"\n").open_error, HasSubstr("Invalid extent line"));
  EXPECT_THAT(qemu("RW 10 FLAT \"/a\" -1\n").open_error, HasSubstr("Invalid extent line"));
  // A path longer than 511 bytes leaves the closing quote unread: four matches, invalid.
  EXPECT_THAT(qemu("RW 10 FLAT \"/" + std::string(600, 'x') + "\" 0\n").open_error,
              HasSubstr("Invalid extent line"));
}

TEST(QemuReading, HexOffsetReadsAsZeroAndTrailingTextIsIgnored) {
  QemuReading r = qemu("RW 10 FLAT \"/a\" 0x10\nRW 10 FLAT \"/b\" 12 anything\n");
  ASSERT_EQ(r.extents.size(), 2u);
  EXPECT_EQ(r.extents[0].offset, 0);
  EXPECT_EQ(r.extents[1].offset, 12);
}

TEST(QemuReading, TheOffsetMayComeFromTheNextLine) {
  QemuReading r = qemu("RW 10 FLAT \"/a\"\n5\n");
  ASSERT_TRUE(r.opens()) << r.open_error;
  ASSERT_EQ(r.extents.size(), 1u);
  EXPECT_EQ(r.extents[0].offset, 5);
}

TEST(QemuReading, HugeNumbersSaturate) {
  QemuReading r = qemu("RW 99999999999999999999999 FLAT \"/a\" 0\n");
  ASSERT_EQ(r.extents.size(), 1u);
  EXPECT_EQ(r.extents[0].sectors, INT64_MAX);
  EXPECT_TRUE(r.size_overflows);
}

TEST(QemuReading, CreateTypeIsASubstringSearchSkippingTwoBytes) {
  std::string base = "CID=1\nparentCID=ffffffff\n";
  EXPECT_THAT(read_as_qemu(base + "createType = \"monolithicFlat\"\nRW 1 FLAT \"/a\" 0\n", "d")
                  .open_error,
              HasSubstr("Unsupported image type ' '"));
  EXPECT_THAT(read_as_qemu(base + "RW 1 FLAT \"/a\" 0\n", "d").open_error,
              HasSubstr("invalid VMDK image descriptor"));
  EXPECT_THAT(read_as_qemu(base + "createType=\"streamOptimized\"\nRW 1 FLAT \"/a\" 0\n", "d")
                  .open_error,
              HasSubstr("Unsupported image type 'streamOptimized'"));
  // The first occurrence wins, even in a comment.
  QemuReading comment = read_as_qemu(
      "# createType is set below\n" + base + "createType=\"monolithicFlat\"\nRW 1 FLAT \"/a\" 0\n",
      "d");
  EXPECT_EQ(comment.create_type_offset, 2u);
  EXPECT_FALSE(comment.opens());
}

TEST(QemuReading, CidIsTheFirstCidSubstringInTheFirst10KiB) {
  QemuReading early = read_as_qemu(
      "# CID values follow\nCID=12\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
      "RW 1 FLAT \"/a\" 0\n",
      "d");
  EXPECT_EQ(early.cid_offset, 2u);
  EXPECT_FALSE(early.opens());  // "values" is not hex
  QemuReading parent_first = read_as_qemu(
      "parentCID=ffffffff\nCID=12\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"/a\" 0\n", "d");
  EXPECT_EQ(parent_first.cid, 0xffffffffu);  // read from inside "parentCID"
  EXPECT_THAT(read_as_qemu("CID = 1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                           "RW 1 FLAT \"/a\" 0\n",
                           "d")
                  .open_error,
              HasSubstr("CID"));
  std::string padding = "# " + std::string(10300, 'p') + "\n";
  QemuReading late = read_as_qemu(
      "createType=\"monolithicFlat\"\n" + padding + "CID=1\nparentCID=ffffffff\nRW 1 FLAT \"/a\" 0\n",
      "d");
  EXPECT_FALSE(late.cid_offset.has_value());
  EXPECT_THAT(late.open_error, HasSubstr("CID"));
}

TEST(QemuReading, TheDescriptorIsCutAt1048575BytesAndAtANul) {
  std::string text = kHeader + "RW 1 FLAT \"/a\" 0\n";
  text += "#" + std::string(kQemuMaxDescriptorBytes - text.size() - 15, 'c') + "\n";
  text += "RW 123456 FLAT \"/b\" 0\n";  // cut after "RW 123"
  QemuReading r = read_as_qemu(text, "d");
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.bytes_read, kQemuMaxDescriptorBytes);
  ASSERT_EQ(r.extents.size(), 1u);  // "RW 123" alone has no type: skipped
  QemuReading nul = qemu(std::string("RW 1 FLAT \"/a\" 0\n\0RW 1 FLAT \"/b\" 0\n", 36));
  EXPECT_TRUE(nul.nul_offset.has_value());
  EXPECT_EQ(nul.extents.size(), 1u);
}

TEST(QemuReading, RelativePathsAreGluedOntoTheDescriptorPathAsGiven) {
  QemuReading r = read_as_qemu(kHeader + "RW 1 FLAT \"layer.erofs\" 0\n", "../d/disk.vmdk");
  ASSERT_EQ(r.extents.size(), 1u);
  EXPECT_EQ(r.extents[0].resolved_path, "../d/layer.erofs");
  EXPECT_EQ(read_as_qemu(kHeader + "RW 1 FLAT \"layer.erofs\" 0\n", "disk.vmdk")
                .extents[0]
                .resolved_path,
            "layer.erofs");
}

TEST(QemuReading, ParentFileNameHintIsFoundAnywhereInTheHead) {
  QemuReading r = qemu("RW 1 FLAT \"/x/parentFileNameHint=\\\"/etc/shadow\" 0\n");
  ASSERT_TRUE(r.parent_file_name_hint.has_value());
}

TEST(SpecReading, ReadsHeaderExtentsAndDdb) {
  SpecReading r = read_as_spec(kHeader +
                               "RDONLY 10 FLAT \"/a\" 0x10\nRW 5 ZERO\n\nrw 3 flat '/q' 2 x\n"
                               "\n# The Disk Data Base\n#DDB\nddb.adapterType = \"ide\"\nbogus\n");
  ASSERT_EQ(r.extents.size(), 3u);
  EXPECT_EQ(r.extents[0].offset, 16u);
  EXPECT_TRUE(r.extents[0].offset_hex);
  EXPECT_FALSE(r.extents[1].path.has_value());
  EXPECT_EQ(r.extents[2].quote, '\'');
  EXPECT_EQ(r.extents[2].trailing, "x");
  ASSERT_NE(r.find_header("createType"), nullptr);
  EXPECT_EQ(r.find_header("createType")->value, "twoGbMaxExtentFlat");
  ASSERT_EQ(r.ddb.size(), 1u);
  EXPECT_TRUE(r.ddb[0].spaced);
  EXPECT_EQ(r.unparsed.size(), 1u);
  EXPECT_EQ(r.line_count, 16u);
}

TEST(ExtentMap, FindsFileAndOffsetForEveryByte) {
  Descriptor d;
  d.extents = {{"/a", 2, 0}, {"/b", 3, 10}, {"/c", 1, 1}};
  ExtentMap map = ExtentMap::from_descriptor(d);
  EXPECT_EQ(map.virtual_size(), 6u * 512);
  auto at = [&](uint64_t offset) {
    auto loc = map.find(offset);
    return loc ? loc->extent->path + "@" + std::to_string(loc->file_offset) : std::string("none");
  };
  EXPECT_EQ(at(0), "/a@0");
  EXPECT_EQ(at(1023), "/a@1023");
  EXPECT_EQ(at(1024), "/b@5120");
  EXPECT_EQ(at(2047), "/b@6143");
  EXPECT_EQ(at(2560), "/c@512");
  EXPECT_EQ(at(3071), "/c@1023");
  EXPECT_EQ(at(3072), "none");
  EXPECT_EQ(map.find(1030)->bytes_left, 1536u - 6);
}

TEST(ExtentMap, FromQemuReadingFollowsQemuNotTheText) {
  QemuReading r = qemu("RW 2 FLAT \"/a\" 0\n\nRW 1 FLAT \"b\" 0x4\n");
  ExtentMap map = ExtentMap::from_qemu_reading(r);
  ASSERT_EQ(map.extents().size(), 3u);
  EXPECT_EQ(map.extents()[2].path, "/disks/b");
  EXPECT_EQ(map.extents()[2].file_offset, 0u);
  EXPECT_EQ(map.extents()[2].line, 10u);
  EXPECT_EQ(map.find(2 * 512 + 512)->index, 2u);
  EXPECT_THROW(ExtentMap::from_qemu_reading(qemu("RW 1 flat \"/a\" 0\n")), Error);
}

TEST(ExtentMap, FromFileNamesTheFileOnError) {
  test::TempDir dir;
  test::write_file(dir / "bad.vmdk", "nothing here");
  try {
    ExtentMap::from_file(dir / "bad.vmdk");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.vmdk"));
  }
}

}  // namespace
}  // namespace evmdk::vmdk
