// Probe: real mkfs.erofs images, and each kind of bad input names the file.
#include <gmock/gmock.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/erofs/probe.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr const char* kUuid = "11111111-2222-4333-8444-555555555555";

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir.path(), "base", kUuid);
    image = dir / "base.erofs";
  }
  std::string probe_error(const std::string& path) {
    try {
      probe_layer(path);
    } catch (const Error& error) {
      return error.what();
    }
    return "no error";
  }
  test::TempDir dir;
  std::string image;
};

TEST_F(ProbeTest, ReadsTheSuperblockOfARealImage) {
  ErofsInfo info = probe_layer(image);
  EXPECT_EQ(info.uuid_string, kUuid);
  EXPECT_EQ(info.blkszbits, 12);
  EXPECT_EQ(info.block_size(), 4096u);
  EXPECT_EQ(info.fs_size, info.blocks * 4096);
  EXPECT_EQ(info.file_size, fs::file_size(image));
  EXPECT_EQ(info.fs_size, info.file_size);  // mkfs.erofs 1.5 writes exactly the filesystem
  EXPECT_TRUE(info.has_checksum);
  EXPECT_EQ(info.extra_devices, 0);
  EXPECT_TRUE(info.devices.empty());
  // dump.erofs agrees on the block count.
  auto dump = test::run({"dump.erofs", "-s", image});
  if (dump.exit_code == 0) {
    EXPECT_THAT(dump.out, HasSubstr(std::to_string(info.blocks)));
  }
}

TEST_F(ProbeTest, AcceptsAnAppendedTreeAndKeepsTheFilesystemSize) {
  ErofsInfo before = probe_layer(image);
  test::write_bytes(image, before.file_size, std::string(8192, 'h'));  // like a verity tree
  ErofsInfo after = probe_layer(image);
  EXPECT_EQ(after.fs_size, before.fs_size);
  EXPECT_EQ(after.file_size, before.file_size + 8192);
}

TEST_F(ProbeTest, MissingFileIsNamed) {
  EXPECT_THAT(probe_error(dir / "nope.erofs"),
              AllOf(HasSubstr(dir / "nope.erofs"), HasSubstr("No such file")));
}

TEST_F(ProbeTest, NotErofsIsNamed) {
  std::string other = dir / "other.img";
  test::write_file(other, std::string(8192, 'x'));
  EXPECT_THAT(probe_error(other), AllOf(HasSubstr(other), HasSubstr("not an EROFS image")));
  std::string tiny = dir / "tiny.img";
  test::write_file(tiny, "abc");
  EXPECT_THAT(probe_error(tiny), AllOf(HasSubstr(tiny), HasSubstr("not an EROFS image")));
}

TEST_F(ProbeTest, BadChecksumIsNamed) {
  test::write_bytes(image, 1024 + 64, "corrupted");  // volume name, checksum not fixed
  EXPECT_THAT(probe_error(image),
              AllOf(HasSubstr(image), HasSubstr("bad EROFS superblock checksum")));
}

TEST_F(ProbeTest, TruncatedImageIsNamed) {
  auto size = fs::file_size(image);
  ASSERT_GT(size, 4096u);
  fs::resize_file(image, size - 4096);
  EXPECT_THAT(probe_error(image), AllOf(HasSubstr(image), HasSubstr("truncated EROFS image")));
}

TEST_F(ProbeTest, UnknownIncompatibleFeatureIsRefused) {
  test::patch_superblock(image, 80, 0x10000, 4);
  EXPECT_THAT(probe_error(image),
              AllOf(HasSubstr(image), HasSubstr("unknown EROFS incompatible feature bits 0x10000")));
}

TEST_F(ProbeTest, UnsupportedBlockSizeAndDirblkbitsAreRefused) {
  std::string copy = dir / "copy.erofs";
  fs::copy_file(image, copy);
  test::write_bytes(image, 1024 + 12, std::string(1, '\x10'));  // checked before the CRC
  EXPECT_THAT(probe_error(image), HasSubstr("unsupported EROFS block size bits 16"));
  test::patch_superblock(copy, 90, 2, 1);
  EXPECT_THAT(probe_error(copy), AllOf(HasSubstr(copy), HasSubstr("dirblkbits 2")));
}

TEST_F(ProbeTest, DirectoryIsRefused) {
  EXPECT_THAT(probe_error(dir.path()), HasSubstr(dir.path()));
}

TEST(ProbeMultiDevice, ReadsTheDeviceTable) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  auto fixture = test::make_multi_device(dir.path());
  ErofsInfo info = probe_layer(fixture.fsmeta);
  EXPECT_EQ(info.extra_devices, 1);
  ASSERT_EQ(info.devices.size(), 1u);
  EXPECT_EQ(info.devices[0].blocks, fixture.blob_blocks);
  EXPECT_EQ(info.devices[0].mapped_blkaddr, fixture.fsmeta_blocks);
  EXPECT_TRUE(info.feature_incompat & erofs_feature::kIncompatDeviceTable);
  EXPECT_THAT(to_json(info).dump(), HasSubstr("\"mapped_blkaddr\":"));
}

}  // namespace
}  // namespace evmdk::host
