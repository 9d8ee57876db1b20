// `erofs-vmdk compose --format raw|auto [--allow-copy]` as a user runs it: the raw image is the
// bytes the VMDK presents, the report counts them, qemu.json attaches it for every VMM, and a
// refusal says why and leaves nothing.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "layer_fixtures.h"

namespace evmdk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class CliRawTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-00000000001a",
                     std::string(9000, 't'));
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-00000000001b");
  }
  nlohmann::json read_json(const std::string& path) {
    return nlohmann::json::parse(test::read_bytes(path, 0, fs::file_size(path)));
  }
  test::TempDir dir;
};

TEST_F(CliRawTest, AllowCopyGivesTheVmdksBytesAndAReport) {
  std::string vmdk = dir / "vmdk", raw = dir / "raw";
  ASSERT_EQ(
      test::cli({"compose", "--mode", "gpt", "-o", vmdk, dir / "top.erofs", dir / "base.erofs"})
          .exit_code,
      0);
  auto composed = test::cli({"compose", "--mode", "gpt", "--format", "raw", "--allow-copy",
                             "--json", "-o", raw, dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  // The raw directory holds the image and the three documents, nothing the VMDK needs.
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(raw)) names.insert(entry.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"disk.img", "layout.json", "qemu.json", "storage.json"}));
  EXPECT_EQ((fs::status(raw + "/disk.img").permissions() & fs::perms::all), fs::perms(0444));

  std::string converted = dir / "converted.raw";
  ASSERT_EQ(
      test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk + "/disk.vmdk", converted})
          .exit_code,
      0);
  EXPECT_EQ(test::read_bytes(raw + "/disk.img", 0, fs::file_size(converted)),
            test::read_bytes(converted, 0, fs::file_size(converted)));
  EXPECT_EQ(fs::file_size(raw + "/disk.img"), fs::file_size(converted));

  // --json prints layout.json: format raw, the disk.img, the report of what was shared.
  auto layout = nlohmann::json::parse(composed.out);
  EXPECT_EQ(layout, read_json(raw + "/layout.json"));
  EXPECT_EQ(layout["format"], "raw");
  EXPECT_EQ(layout["mode"], "gpt");
  EXPECT_EQ(layout["disk"], raw + "/disk.img");
  const auto& report = layout["raw_image"];
  EXPECT_EQ(report["size"], fs::file_size(converted));
  EXPECT_EQ(report["shared_bytes"].get<uint64_t>() + report["copied_bytes"].get<uint64_t>() +
                report["hole_bytes"].get<uint64_t>(),
            fs::file_size(converted));
  EXPECT_GT(report["copied_bytes"].get<uint64_t>() + report["shared_bytes"].get<uint64_t>(), 0u);

  // qemu.json: QEMU format=raw, and the other VMMs, all read-only, with the serial.
  auto qemu = read_json(raw + "/qemu.json");
  std::string serial = qemu["serial"];
  EXPECT_EQ(qemu["format"], "raw");
  EXPECT_EQ(qemu["blockdev-add"]["driver"], "raw");
  EXPECT_EQ(qemu["blockdev-add"]["read-only"], true);
  EXPECT_EQ(qemu["blockdev-add"]["force-share"], true);
  EXPECT_THAT(qemu["drive_args"][1].get<std::string>(),
              AllOf(HasSubstr("file=" + raw + "/disk.img,format=raw"), HasSubstr("readonly=on")));
  EXPECT_EQ(qemu["cloud-hypervisor"]["args"][1],
            "path=" + raw + "/disk.img,readonly=on,serial=" + serial + ",id=" + serial);
  EXPECT_EQ(qemu["firecracker"]["is_read_only"], true);
  EXPECT_EQ(qemu["firecracker"]["path_on_host"], raw + "/disk.img");
  EXPECT_EQ(qemu["libkrun"]["format"], "raw");
  EXPECT_EQ(qemu["libkrun"]["read_only"], true);
  // The default stays the VMDK, with the qemu.json it always had.
  auto vmdk_qemu = read_json(vmdk + "/qemu.json");
  EXPECT_EQ(vmdk_qemu["format"], "vmdk");
  EXPECT_FALSE(vmdk_qemu.contains("firecracker"));
  EXPECT_EQ(vmdk_qemu["serial"], serial);
}

// Where the temp directory's filesystem cannot share blocks, raw is refused (naming the layer,
// the reason and --allow-copy) and auto falls back to the VMDK saying why; where it can, both
// give a fully shared image.
TEST_F(CliRawTest, RawIsRefusedOrSharedAndAutoFollows) {
  std::string refused = dir / "refused", chosen = dir / "auto";
  auto automatic = test::cli({"compose", "--mode", "gpt", "--format", "auto", "-o", chosen,
                              dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  auto raw = test::cli({"compose", "--mode", "gpt", "--format", "raw", "-o", refused,
                        dir / "top.erofs", dir / "base.erofs"});
  if (fs::exists(chosen + "/disk.img")) {
    ASSERT_EQ(raw.exit_code, 0) << raw.err;
    EXPECT_THAT(raw.out, HasSubstr("0 copied"));  // nothing but partial blocks would be
    EXPECT_FALSE(fs::exists(chosen + "/disk.vmdk"));
    return;
  }
  EXPECT_TRUE(fs::exists(chosen + "/disk.vmdk"));
  EXPECT_THAT(automatic.err, AllOf(HasSubstr("--format auto chose vmdk"), HasSubstr("layer 0")));
  EXPECT_NE(raw.exit_code, 0);
  EXPECT_THAT(raw.err, AllOf(HasSubstr("--format raw"), HasSubstr("layer 0"),
                             HasSubstr(dir / "top.erofs"), HasSubstr("--allow-copy")));
  EXPECT_FALSE(fs::exists(refused));
}

TEST_F(CliRawTest, FdsetPassesTheOneImage) {
  std::string raw = dir / "raw";
  auto composed =
      test::cli({"compose", "--format", "raw", "--allow-copy", "--fdset", "--first-fdset", "4",
                 "-o", raw, dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto qemu = read_json(raw + "/qemu.json");
  ASSERT_EQ(qemu["fdsets"].size(), 1u);
  EXPECT_EQ(qemu["fdsets"][0]["fdset-id"], 4);
  EXPECT_EQ(qemu["fdsets"][0]["path"], raw + "/disk.img");
}

TEST_F(CliRawTest, BadFormatIsRefused) {
  auto bad = test::cli({"compose", "--format", "qcow2", "-o", dir / "out", dir / "top.erofs"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--format"));
  EXPECT_FALSE(fs::exists(dir / "out"));
}

}  // namespace
}  // namespace evmdk
