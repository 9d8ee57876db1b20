// `erofs-vmdk compose --format raw|auto` on real loop-mounted filesystems: on XFS (reflink=1)
// and btrfs the disk.img is byte for byte `qemu-img convert` of the VMDK compose writes for the
// same layers (gpt and flat), every layer's extents are shared (FIEMAP) and auto picks raw; on
// ext4 raw is refused naming the layer, the reason and --allow-copy, with nothing left, auto
// writes the VMDK and says why, and --allow-copy gives a correct, reported copy.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "volume_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(test::read_bytes(path, 0, fs::file_size(path)));
}

std::vector<std::string> make_layers(const std::string& dir) {
  std::vector<std::string> out;
  for (int i = 0; i < 3; ++i) {
    std::string name = "layer" + std::to_string(i);
    test::make_layer(dir, name, "11111111-2222-4333-8444-55555555560" + std::to_string(i),
                     std::string(static_cast<size_t>(i) * 7000 + 100, 'a' + static_cast<char>(i)));
    out.push_back(dir + "/" + name + ".erofs");
  }
  return out;
}

// compose twice, as the VMDK and as `format` (plus extra arguments); returns layout.json of the
// raw compose after checking its image is what qemu-img reads through the VMDK.
nlohmann::json compose_both(const std::vector<std::string>& head_args,
                            const std::vector<std::string>& layers, const std::string& vmdk_dir,
                            const std::string& raw_dir, const std::vector<std::string>& raw_args,
                            const std::string& scratch) {
  std::vector<std::string> vmdk = {"compose"};
  vmdk.insert(vmdk.end(), head_args.begin(), head_args.end());
  vmdk.insert(vmdk.end(), {"-o", vmdk_dir});
  vmdk.insert(vmdk.end(), layers.begin(), layers.end());
  auto made = test::cli(vmdk);
  EXPECT_EQ(made.exit_code, 0) << made.err;
  std::vector<std::string> raw = {"compose", "--json"};
  raw.insert(raw.end(), head_args.begin(), head_args.end());
  raw.insert(raw.end(), raw_args.begin(), raw_args.end());
  raw.insert(raw.end(), {"-o", raw_dir});
  raw.insert(raw.end(), layers.begin(), layers.end());
  auto composed = test::cli(raw);
  EXPECT_EQ(composed.exit_code, 0) << composed.err;
  if (composed.exit_code != 0) return {};
  std::string converted = scratch + "/converted.raw";
  auto convert = test::run(
      {"qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk_dir + "/disk.vmdk", converted});
  EXPECT_EQ(convert.exit_code, 0) << convert.err;
  EXPECT_EQ(compare_files(raw_dir + "/disk.img", converted), "");
  fs::remove(converted);
  EXPECT_FALSE(fs::exists(raw_dir + "/disk.vmdk"));
  return nlohmann::json::parse(composed.out);
}

RawPieceReport piece_of(const nlohmann::json& piece) {
  RawPieceReport out;
  out.name = piece["name"];
  out.disk_offset = piece["disk_offset"];
  out.length = piece["length"];
  out.source_offset = piece["source_offset"];
  out.shared_bytes = piece["shared_bytes"];
  out.copied_bytes = piece["copied_bytes"];
  return out;
}

class ComposeRawReflinkRoot : public ::testing::TestWithParam<std::string> {};

TEST_P(ComposeRawReflinkRoot, GptDiskImageIsTheVmdkWithEveryLayerShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto layers = make_layers(volume.path());
  auto layout = compose_both({"--mode", "gpt"}, layers, volume / "vmdk", volume / "raw",
                             {"--format", "raw"}, dir.path());
  ASSERT_FALSE(layout.is_null());
  EXPECT_EQ(layout["format"], "raw");
  const auto& report = layout["raw_image"];
  EXPECT_EQ(report["reflinked"], true) << report["reflink_problem"];
  EXPECT_EQ(report["filesystem"], GetParam());
  uint64_t block = report["block_size"];
  size_t shared_layers = 0;
  for (const auto& piece : report["pieces"]) {
    if (piece["kind"] != "data") continue;
    std::string path = piece["path"];
    uint64_t size = fs::file_size(path);
    EXPECT_EQ(piece["shared_bytes"], size / block * block) << piece["name"];
    EXPECT_EQ(piece["copied_bytes"], size % block) << piece["name"];
    expect_shared(volume / "raw/disk.img", path, piece_of(piece), block);
    ++shared_layers;
  }
  EXPECT_EQ(shared_layers, layers.size());
  // auto picks raw here, silently.
  auto automatic = test::cli({"compose", "--mode", "gpt", "--format", "auto", "-o", volume / "auto",
                              layers[0], layers[1], layers[2]});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_TRUE(fs::exists(volume / "auto/disk.img"));
  EXPECT_THAT(automatic.err, ::testing::Not(HasSubstr("chose vmdk")));
  EXPECT_EQ(read_json(volume / "auto/qemu.json")["format"], "raw");
}

TEST_P(ComposeRawReflinkRoot, FlatDiskImageIsTheVmdkWithFsmetaAndBlobShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto fixture = test::make_multi_device(volume.path());
  test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks + 3);  // a 3-block gap
  auto layout = compose_both({"--mode", "flat"}, {fixture.fsmeta, fixture.blob}, volume / "vmdk",
                             volume / "raw", {"--format", "raw"}, dir.path());
  ASSERT_FALSE(layout.is_null());
  const auto& report = layout["raw_image"];
  EXPECT_EQ(report["reflinked"], true) << report["reflink_problem"];
  EXPECT_EQ(report["copied_bytes"], 0);
  ASSERT_EQ(report["pieces"].size(), 3u);
  EXPECT_EQ(report["pieces"][1]["kind"], "filler");
  uint64_t block = report["block_size"];
  expect_shared(volume / "raw/disk.img", fixture.fsmeta, piece_of(report["pieces"][0]), block);
  expect_shared(volume / "raw/disk.img", fixture.blob, piece_of(report["pieces"][2]), block);
}

INSTANTIATE_TEST_SUITE_P(Filesystems, ComposeRawReflinkRoot, ::testing::Values("xfs", "btrfs"),
                         [](const auto& info) { return info.param; });

TEST(ComposeRawRoot, Ext4RefusesAutoFallsBackAndAllowCopyCopies) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "ext4", 256 * kMiB);
  auto layers = make_layers(volume.path());
  auto refused = test::cli(
      {"compose", "--format", "raw", "-o", volume / "refused", layers[0], layers[1], layers[2]});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, AllOf(HasSubstr("--format raw"), HasSubstr("layer 0 (" + layers[0]),
                                 HasSubstr("ext4"), HasSubstr("--allow-copy")));
  EXPECT_FALSE(fs::exists(volume / "refused"));

  auto automatic = test::cli(
      {"compose", "--format", "auto", "-o", volume / "auto", layers[0], layers[1], layers[2]});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_THAT(automatic.err, AllOf(HasSubstr("--format auto chose vmdk"), HasSubstr("ext4")));
  EXPECT_TRUE(fs::exists(volume / "auto/disk.vmdk"));
  EXPECT_FALSE(fs::exists(volume / "auto/disk.img"));

  auto layout = compose_both({"--mode", "gpt"}, layers, volume / "vmdk", volume / "copy",
                             {"--format", "raw", "--allow-copy"}, dir.path());
  ASSERT_FALSE(layout.is_null());
  const auto& report = layout["raw_image"];
  EXPECT_EQ(report["reflinked"], false);
  EXPECT_EQ(report["shared_bytes"], 0);
  EXPECT_THAT(report["reflink_problem"].get<std::string>(), HasSubstr("layer 0"));
  uint64_t layer_bytes = 0;
  for (const auto& layer : layers) layer_bytes += fs::file_size(layer);
  EXPECT_GE(report["copied_bytes"].get<uint64_t>(), layer_bytes);
}

}  // namespace
}  // namespace evmdk::host
