// `erofs-vmdk inspect` of composed raw outputs on real loop-mounted filesystems: on XFS
// (reflink=1) and btrfs every layer's bytes in disk.img are FIEMAP-shared and inspect says so
// (shared = the layer's bytes, nothing copied); on ext4 with --allow-copy nothing is shared and
// the copied bytes are reported. DAX coverage and pmem readiness come with it.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "volume_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<std::string> make_dax_layers(const std::string& dir) {
  std::vector<std::string> out;
  for (int i = 0; i < 2; ++i) {
    std::string name = "layer" + std::to_string(i);
    test::make_tree(dir + "/" + name + ".d",
                    {{"data/file", std::string(static_cast<size_t>(i) * 30000 + 9000, 'a' + i)},
                     {"etc/" + name, name + "\n"}});
    test::make_erofs(dir + "/" + name + ".d", dir + "/" + name + ".erofs",
                     "11111111-2222-4333-8444-55555555570" + std::to_string(i),
                     {"-Enoinline_data"});
    out.push_back(dir + "/" + name + ".erofs");
  }
  return out;
}

nlohmann::json inspect_json(const std::string& path) {
  auto result = test::cli({"inspect", "--json", path});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return result.exit_code == 0 ? nlohmann::json::parse(result.out) : nlohmann::json::object();
}

class InspectRawReflinkRoot : public ::testing::TestWithParam<std::string> {};

TEST_P(InspectRawReflinkRoot, GptImageLayersAreSharedWholeAndDaxServed) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto layers = make_dax_layers(volume.path());
  auto composed = test::cli(
      {"compose", "--mode", "gpt", "--format", "raw", "-o", volume / "out", layers[0], layers[1]});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto json = inspect_json(volume / "out/disk.img");
  EXPECT_EQ(json["type"], "composed");
  EXPECT_EQ(json["format"], "raw");
  EXPECT_EQ(json["raw_image"]["filesystem"], GetParam());
  ASSERT_EQ(json["layers"].size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(layers[i]);
    const auto& sharing = json["layers"][i]["sharing"];
    ASSERT_FALSE(sharing.contains("error")) << sharing["error"];
    EXPECT_EQ(sharing["bytes"], fs::file_size(layers[i]));
    EXPECT_EQ(sharing["shared_bytes"], fs::file_size(layers[i])) << "every byte reflinked";
    EXPECT_EQ(sharing["copied_bytes"], 0);
    EXPECT_EQ(sharing["hole_bytes"], 0);
    EXPECT_EQ(json["layers"][i]["dax"]["dax_percent"], 100.0);
  }
  EXPECT_EQ(json["pmem"]["ready"], fs::file_size(volume / "out/disk.img") % (2 * kMiB) == 0);
  auto text = test::cli({"inspect", volume / "out/disk.vmdk"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out,
              AllOf(HasSubstr(fmt::format("{0} of {0} bytes shared by reflink, 0 copied",
                                          fs::file_size(layers[0]))),
                    HasSubstr("DAX serves 100.0%"), HasSubstr("pmem   ")));
}

TEST_P(InspectRawReflinkRoot, FlatImageFsmetaAndBlobShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto fixture = test::make_multi_device(volume.path());
  test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks);
  auto composed = test::cli({"compose", "--mode", "flat", "--format", "raw", "-o", volume / "out",
                             fixture.fsmeta, fixture.blob});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto json = inspect_json(volume / "out/disk.img");
  EXPECT_EQ(json["mode"], "flat");
  ASSERT_EQ(json["layers"].size(), 2u);
  EXPECT_EQ(json["layers"][0]["sharing"]["shared_bytes"], fs::file_size(fixture.fsmeta));
  EXPECT_EQ(json["layers"][1]["sharing"]["shared_bytes"], fs::file_size(fixture.blob));
  EXPECT_EQ(json["layers"][0]["dax"]["by_layout"]["chunk_based"]["files"],
            json["layers"][0]["dax"]["files"])
      << "--blobdev files are chunk-based: DAX";
  EXPECT_THAT(json["pmem"].dump(), ::testing::Not(HasSubstr("4 KiB"))) << json["pmem"].dump();
}

INSTANTIATE_TEST_SUITE_P(Filesystems, InspectRawReflinkRoot, ::testing::Values("xfs", "btrfs"),
                         [](const auto& info) { return info.param; });

TEST(InspectRawRoot, Ext4AllowCopyReportsCopiedNotShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "ext4", 256 * kMiB);
  auto layers = make_dax_layers(volume.path());
  auto composed = test::cli({"compose", "--mode", "gpt", "--format", "raw", "--allow-copy", "-o",
                             volume / "out", layers[0], layers[1]});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto json = inspect_json(volume / "out/disk.img");
  EXPECT_EQ(json["raw_image"]["filesystem"], "ext4");
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& sharing = json["layers"][i]["sharing"];
    ASSERT_FALSE(sharing.contains("error")) << sharing["error"];
    EXPECT_EQ(sharing["shared_bytes"], 0);
    EXPECT_EQ(sharing["copied_bytes"], fs::file_size(layers[i]));
    EXPECT_EQ(sharing["unshared_bytes"], fs::file_size(layers[i]));
  }
  EXPECT_GT(json["raw_image"]["copied_bytes"].get<uint64_t>(), 0u);
  auto text = test::cli({"inspect", volume / "out/disk.img"});
  EXPECT_THAT(text.out, HasSubstr(fmt::format("0 of {0} bytes shared by reflink, {0} copied",
                                              fs::file_size(layers[0]))));
}

}  // namespace
}  // namespace evmdk::host
