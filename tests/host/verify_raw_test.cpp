// verify on raw composed disks without root (compose --format raw --allow-copy on any
// filesystem): a copied gpt image verifies; its disk.img is opened as an input file, so a
// symlink or a FIFO in its place is refused by name (and nothing hangs); --verity trees are
// checked in the image; a padded raw-mode image (pmem) verifies. The reflinked images
// and their damage: verify_raw_root_test.cpp.
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verify/verify.h"
#include "evmdk/host/verity/verity.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class VerifyRawCopy : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    ComposeOptions options;
    options.mode = ComposeMode::Gpt;
    options.format = DiskFormat::Raw;
    options.allow_copy = true;
    for (const char* name : {"top", "base"}) {
      test::make_layer(dir_.path(), name, "", std::string(3000, name[0]));
      options.layers.push_back({dir_ / (std::string(name) + ".erofs"), {}});
    }
    options.output_dir = dir_ / "out";
    compose(options);
  }
  VerifyReport run() {
    VerifyOptions options;
    options.target = dir_ / "out";
    options.digest = true;
    options.progress = false;
    return verify_disk(options);
  }
  test::TempDir dir_;
};

TEST_F(VerifyRawCopy, CopiedImageVerifies) {
  VerifyReport report = run();
  EXPECT_TRUE(report.ok()) << ::testing::PrintToString(report.problems);
  EXPECT_EQ(report.image, dir_ / "out/disk.img");
  EXPECT_EQ(report.descriptor, "");
  EXPECT_EQ(report.mode, "gpt");
  ASSERT_EQ(report.layers.size(), 2u);
  EXPECT_EQ(report.stats.bytes, fs::file_size(dir_ / "out/disk.img"));
  auto cli = test::cli({"verify", dir_ / "out/disk.img"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("verified: 2 layers"));
  // A stale descriptor left in the directory is not taken for the image.
  test::write_file(dir_ / "out/disk.vmdk", "# Disk DescriptorFile\n");
  auto stale = test::cli({"verify", dir_ / "out/disk.vmdk"});
  EXPECT_NE(stale.exit_code, 0);
  EXPECT_THAT(stale.err, HasSubstr("describes the raw image " + dir_ / "out/disk.img"));
}

TEST_F(VerifyRawCopy, SymlinkOrFifoInPlaceOfTheImageIsRefused) {
  std::string image = dir_ / "out/disk.img";
  fs::rename(image, dir_ / "moved.img");
  fs::create_symlink(dir_ / "moved.img", image);
  EXPECT_THAT([&] { run(); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("raw image"), HasSubstr(image))));
  fs::remove(image);
  ASSERT_EQ(::mkfifo(image.c_str(), 0600), 0);
  auto cli = test::cli({"verify", dir_ / "out"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_THAT(cli.err, AllOf(HasSubstr(image), HasSubstr("FIFO")));
}

// --verity: the trees are recomputed from the image's bytes at each layer's offset; a tree
// byte changed in the image (the layer file still intact) is named with its disk offset.
TEST(VerifyRawVerity, TreesAreCheckedInTheImage) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  std::vector<std::string> args = {"compose", "--mode", "gpt", "--format", "raw", "--allow-copy",
                                   "--verity", "on", "-o", dir / "out"};
  for (const char* name : {"top", "base"}) {
    test::make_layer(dir.path(), name, "", std::string(5000, name[0]));
    verity_format(dir / (std::string(name) + ".erofs"), {});
    args.push_back(dir / (std::string(name) + ".erofs"));
  }
  auto composed = test::cli(args);
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto verified = test::cli({"verify", "--verity", dir / "out"});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_THAT(verified.out, HasSubstr("dm-verity verified"));
  auto layout = nlohmann::json::parse(test::read_file(dir / "out/layout.json"));
  uint64_t tree = layout["layers"][1]["verity"]["hash_disk_offset"].get<uint64_t>() + 4096;
  std::string byte = test::read_bytes(dir / "out/disk.img", tree, 1);
  byte[0] = static_cast<char>(byte[0] ^ 1);
  test::write_bytes(dir / "out/disk.img", tree, byte);
  verified = test::cli({"verify", "--verity", dir / "out"});
  EXPECT_NE(verified.exit_code, 0);
  EXPECT_THAT(verified.err, HasSubstr("stored hash tree differs from its data at disk offset " +
                                      std::to_string(tree)));
}

// Raw mode can also write an image: the layer plus zeros up to a 2 MiB multiple (virtio-pmem).
// layout.json then names disk.img as the disk and its disk_sectors are the image's: verified
// as an image (the layer compared byte for byte, the padding zero), not as the layer file.
TEST(VerifyRawModeImage, PaddedSingleLayerImageVerifies) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  test::make_layer(dir.path(), "only", "", "x");
  std::string layer = dir / "only.erofs";
  ComposeOptions options;
  options.mode = ComposeMode::Raw;
  options.layers.push_back({layer, {}});
  options.output_dir = dir / "out";
  compose(options);
  // What such a compose writes: disk.img = the layer + zeros; layout.json naming it.
  std::string image = dir / "out/disk.img";
  uint64_t padded = 2u << 20;
  test::write_file(image, test::read_file(layer));
  fs::resize_file(image, padded);
  auto layout = nlohmann::json::parse(test::read_file(dir / "out/layout.json"));
  uint64_t layer_sectors = layout["disk_sectors"];
  layout["disk"] = image;
  layout["disk_sectors"] = padded / 512;
  layout["extents"].push_back({{"role", "zero"},
                               {"first_lba", layer_sectors},
                               {"last_lba", padded / 512 - 1},
                               {"sectors", padded / 512 - layer_sectors},
                               {"path", ""},
                               {"file_offset_sectors", 0}});
  layout["raw_image"] = nlohmann::json::object();
  test::write_file(dir / "out/layout.json", layout.dump(2));

  VerifyOptions verify;
  verify.target = dir / "out";
  verify.digest = true;
  verify.progress = false;
  VerifyReport report = verify_disk(verify);
  EXPECT_TRUE(report.ok()) << ::testing::PrintToString(report.problems);
  EXPECT_EQ(report.image, image);
  EXPECT_EQ(report.mode, "raw");
  EXPECT_EQ(report.disk_bytes, padded);
  EXPECT_EQ(report.stats.bytes, padded);

  std::string zero(1, '\1');
  test::write_bytes(image, padded - 100, zero);  // the padding
  test::write_bytes(image, 5000, zero);          // the layer
  report = verify_disk(verify);
  std::string problems = ::testing::PrintToString(report.problems);
  EXPECT_THAT(problems, HasSubstr("at disk offset 5000 (LBA 9): " + image + " differs from " +
                                  fs::canonical(layer).string() + " at its byte 5000"));
  EXPECT_THAT(problems, HasSubstr("non-zero byte"));
}

}  // namespace
}  // namespace evmdk::host
