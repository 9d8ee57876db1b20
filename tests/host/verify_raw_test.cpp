// verify on raw composed disks without root (compose --format raw --allow-copy on any
// filesystem): a copied gpt image verifies; its disk.img is opened as an input file, so a
// symlink or a FIFO in its place is refused by name (and nothing hangs). The reflinked images
// and their damage: verify_raw_root_test.cpp.
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verify/verify.h"
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

}  // namespace
}  // namespace evmdk::host
