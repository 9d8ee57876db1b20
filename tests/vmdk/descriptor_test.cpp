// The writer: the well-known template byte for byte, deterministic CIDs, 2 GiB splitting, and a
// clear refusal of everything QEMU would misread.
#include "evmdk/vmdk/descriptor.h"

#include <sys/stat.h>

#include <filesystem>

#include "evmdk/error.h"
#include <gmock/gmock.h>

#include "test_support.h"

namespace evmdk::vmdk {
namespace {

using ::testing::HasSubstr;

Descriptor two_layers() {
  Descriptor d;
  d.extents = {{"/var/lib/layers/a.erofs", 2048, 0}, {"/var/lib/layers/b.erofs", 100, 8}};
  return d;
}

std::string error_of(const Descriptor& d) {
  try {
    render(d);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(VmdkWriter, EmitsTheWellKnownTemplateByteForByte) {
  std::string text = render(two_layers());
  // Everything but the CID value is fixed by the template.
  ASSERT_GE(text.size(), 45u);
  std::string cid = text.substr(text.find("CID=") + 4, 8);
  EXPECT_EQ(cid.find_first_not_of("0123456789abcdef"), std::string::npos) << cid;
  EXPECT_EQ(text,
            "# Disk DescriptorFile\n"
            "version=1\n"
            "CID=" + cid + "\n"
            "parentCID=ffffffff\n"
            "createType=\"twoGbMaxExtentFlat\"\n"
            "\n"
            "# Extent description\n"
            "RW 2048 FLAT \"/var/lib/layers/a.erofs\" 0\n"
            "RW 100 FLAT \"/var/lib/layers/b.erofs\" 8\n"
            "\n"
            "# The Disk Data Base\n"
            "#DDB\n"
            "\n"
            "ddb.virtualHWVersion = \"4\"\n"
            "ddb.geometry.cylinders = \"3\"\n"
            "ddb.geometry.heads = \"16\"\n"
            "ddb.geometry.sectors = \"63\"\n"
            "ddb.adapterType = \"ide\"\n");
}

TEST(VmdkWriter, SameInputGivesSameBytesAndDifferentExtentsADifferentCid) {
  EXPECT_EQ(render(two_layers()), render(two_layers()));
  Descriptor other = two_layers();
  other.extents[1].offset = 16;
  std::string a = render(two_layers());
  std::string b = render(other);
  EXPECT_NE(a.substr(a.find("CID="), 12), b.substr(b.find("CID="), 12));
}

TEST(VmdkWriter, MonolithicFlatKeepsExtentsWhole) {
  Descriptor d;
  d.create_type = CreateType::MonolithicFlat;
  d.extents = {{"/big", kTwoGbExtentSectors * 2 + 5, 0}};
  std::string text = render(d);
  EXPECT_THAT(text, HasSubstr("createType=\"monolithicFlat\"\n"));
  EXPECT_THAT(text, HasSubstr("\nRW 8388613 FLAT \"/big\" 0\n"));
}

TEST(VmdkWriter, TwoGbMaxExtentFlatSplitsAtTwoGibWithRisingOffsets) {
  Descriptor d;
  d.extents = {{"/big", kTwoGbExtentSectors * 2 + 5, 7}, {"/small", 1, 0}};
  EXPECT_THAT(render(d), HasSubstr("# Extent description\n"
                                   "RW 4194304 FLAT \"/big\" 7\n"
                                   "RW 4194304 FLAT \"/big\" 4194311\n"
                                   "RW 5 FLAT \"/big\" 8388615\n"
                                   "RW 1 FLAT \"/small\" 0\n\n"));
  EXPECT_EQ(total_sectors(d), kTwoGbExtentSectors * 2 + 6);
  EXPECT_EQ(emitted_extents(d).size(), 4u);
}

TEST(VmdkWriter, TotalSectorsAddsExtents) {
  EXPECT_EQ(total_sectors(two_layers()), 2148u);
  EXPECT_EQ(total_sectors(Descriptor{}), 0u);
}

TEST(VmdkWriter, RefusesPathsQemuWouldMisreadNamingTheExtent) {
  for (std::string bad : {std::string("/a\"b"), std::string("/a\rb"), std::string("/a\nb"),
                          std::string("/a\0b", 4)}) {
    Descriptor d = two_layers();
    d.extents[1].path = bad;
    std::string message = error_of(d);
    EXPECT_THAT(message, HasSubstr("extent 1")) << message;
    EXPECT_THAT(message, HasSubstr("path contains")) << message;
  }
  Descriptor long_path = two_layers();
  long_path.extents[0].path = "/" + std::string(511, 'x');
  EXPECT_THAT(error_of(long_path), HasSubstr("extent 0"));
  EXPECT_THAT(error_of(long_path), HasSubstr("512 bytes, QEMU reads at most 511"));
  long_path.extents[0].path.pop_back();
  EXPECT_NO_THROW(render(long_path));  // exactly 511 bytes is fine

  Descriptor relative = two_layers();
  relative.extents[0].path = "a.erofs";
  EXPECT_THAT(error_of(relative), HasSubstr("relative"));
  Descriptor empty_path = two_layers();
  empty_path.extents[0].path = "";
  EXPECT_THAT(error_of(empty_path), HasSubstr("empty path"));
  Descriptor hint = two_layers();
  hint.extents[1].path = "/x/parentFileNameHint";
  EXPECT_THAT(error_of(hint), HasSubstr("backing file"));
}

TEST(VmdkWriter, RefusesZeroSectorsAndOverflow) {
  Descriptor zero = two_layers();
  zero.extents[1].sectors = 0;
  EXPECT_THAT(error_of(zero), HasSubstr("extent 1 (path \"/var/lib/layers/b.erofs\"): sector "
                                        "count must be positive"));
  Descriptor huge = two_layers();
  huge.extents[0].sectors = UINT64_MAX;
  EXPECT_THAT(error_of(huge), HasSubstr("overflow"));
  EXPECT_THROW(total_sectors(huge), Error);
  Descriptor huge_offset = two_layers();
  huge_offset.extents[0].offset = uint64_t{1} << 55;
  EXPECT_THAT(error_of(huge_offset), HasSubstr("extent 0"));
  EXPECT_THAT(error_of(huge_offset), HasSubstr("overflow"));
  // Each extent fits, the sum does not.
  Descriptor sum;
  sum.create_type = CreateType::MonolithicFlat;
  sum.extents = {{"/a", uint64_t{1} << 53, 0}, {"/b", uint64_t{1} << 53, 0}};
  EXPECT_THAT(error_of(sum), HasSubstr("extent 1"));
}

TEST(VmdkWriter, RefusesEmptyDescriptorsBadAdaptersAndTooManyExtents) {
  EXPECT_THAT(error_of(Descriptor{}), HasSubstr("no extents"));
  Descriptor adapter = two_layers();
  adapter.adapter_type = "ide\"";
  EXPECT_THAT(error_of(adapter), HasSubstr("adapter type"));
  Descriptor many;
  for (size_t i = 0; i <= kMaxExtentLines; ++i) many.extents.push_back({"/f", 1, i});
  EXPECT_THAT(error_of(many), HasSubstr("fd per line"));
  many.extents.pop_back();
  EXPECT_NO_THROW(render(many));
  // A huge twoGbMaxExtentFlat extent is refused before it is split into 2^28 lines (found by
  // the fuzzer: it used to run out of memory).
  Descriptor huge;
  huge.extents = {{"/huge", uint64_t{1} << 50, 0}};
  EXPECT_THAT(error_of(huge), HasSubstr("extent 0 (path \"/huge\"): the descriptor would need"));
}

TEST(VmdkWriter, RefusesADescriptorQemuWouldCutAt1MiB) {
  Descriptor d;
  for (size_t i = 0; i < 2100; ++i) d.extents.push_back({"/" + std::string(500, 'p'), 1, i});
  EXPECT_THAT(error_of(d), HasSubstr("QEMU silently ignores everything after 1048575"));
}

TEST(VmdkWriter, WritesAtomicallyAndLeavesNothingOnError) {
  test::TempDir dir;
  std::string path = dir / "disk.vmdk";
  write_descriptor_file(path, two_layers());
  EXPECT_EQ(test::read_file(path), render(two_layers()));
  Descriptor bad = two_layers();
  bad.extents[0].sectors = 0;
  try {
    write_descriptor_file(path, bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("extent 0"));
  }
  // The old file is untouched and no temp file is left behind.
  EXPECT_EQ(test::read_file(path), render(two_layers()));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

}  // namespace
}  // namespace evmdk::vmdk
