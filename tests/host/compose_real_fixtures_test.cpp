// compose on what real tools make (tests/data/fixtures): erofs-utils 1.8.10's rebuild-mode
// fsmeta with its three layers (issue 14 item 4) -- `compose --mode flat` must present exactly
// the bytes of erofs-utils' own --vmdk-desc descriptor over the same files.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/erofs/probe.h"
#include "real_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string to_raw(const std::string& descriptor, const std::string& raw) {
  auto result = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", descriptor, raw});
  EXPECT_EQ(result.exit_code, 0) << descriptor << ": " << result.err;
  return test::read_file(raw);
}

TEST(ComposeRealFixtures, FlatModeOfErofsUtilsRebuildFsmetaEqualsItsOwnDescriptor) {
  EVMDK_REQUIRE_TOOLS("qemu-img");
  test::TempDir dir;
  auto files = test::copy_erofs_utils_flat(dir / "fixture");
  std::vector<std::string> argv{"compose", "--mode", "flat", "-o", dir / "out"};
  argv.insert(argv.end(), files.begin(), files.end());
  auto composed = test::cli(argv);
  ASSERT_EQ(composed.exit_code, 0) << composed.out << composed.err;

  std::string ours = to_raw(dir / "out/disk.vmdk", dir / "ours.raw");
  std::string theirs = to_raw(dir / "fixture/merged.vmdk", dir / "theirs.raw");
  ASSERT_EQ(theirs.size(), 57344u);  // 8 + 32 + 24 + 48 sectors
  EXPECT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "compose --mode flat differs from erofs-utils' merged.vmdk";

  // One flat disk; the guest gets one lower, without device= options (it maps the devices
  // from the disk itself).
  auto storages = nlohmann::json::parse(test::read_file(dir / "out/storage.json"));
  ASSERT_EQ(storages.size(), 1u);
  for (const auto& option : storages[0].at("options")) {
    EXPECT_THAT(option.get<std::string>(), ::testing::Not(HasSubstr("device=")));
  }
}

TEST(ComposeRealFixtures, ProbeSeesTheTarIndexDeviceInsideTheFile) {
  for (int n = 1; n <= test::kTarIndexLayers; ++n) {
    SCOPED_TRACE(n);
    ErofsInfo info = probe_layer(test::tarindex_layer(n));
    ASSERT_EQ(info.devices.size(), 1u);
    EXPECT_EQ(info.block_size(), 512u);
    EXPECT_TRUE(info.devices[0].tag.empty());
    ASSERT_EQ(info.device_in_file.size(), 1u);
    EXPECT_TRUE(info.device_in_file[0]);
    EXPECT_EQ(info.devices_outside_file(), 0u);
    EXPECT_EQ(info.layer_end, (info.devices[0].mapped_blkaddr + info.devices[0].blocks) * 512);
    EXPECT_GT(info.layer_end, info.fs_size);
    EXPECT_LE(info.layer_end, info.file_size);
  }
  // The rebuild-mode fsmeta's devices are its three layers: outside the 4 KiB file.
  test::TempDir dir;
  auto files = test::copy_erofs_utils_flat(dir.path());
  ErofsInfo fsmeta = probe_layer(files[0]);
  EXPECT_EQ(fsmeta.devices_outside_file(), 3u);
  EXPECT_EQ(fsmeta.layer_end, fsmeta.fs_size);
  EXPECT_THAT(fsmeta.first_device_outside_file(),
              HasSubstr("device 1 is mapped at bytes 4096..20480, beyond the file's 4096 bytes"));
}

ComposeOptions options_for(ComposeMode mode, const std::vector<std::string>& layers,
                           const std::string& out) {
  ComposeOptions options;
  options.mode = mode;
  options.output_dir = out;
  for (const auto& layer : layers) options.layers.push_back({layer, {}, {}});
  return options;
}

std::vector<std::string> tarindex_top_first() {
  std::vector<std::string> layers;
  for (int n = test::kTarIndexLayers; n >= 1; --n) layers.push_back(test::tarindex_layer(n));
  return layers;
}

TEST(ComposeRealFixtures, TarIndexLayersComposeRawAndGptWhole) {
  EVMDK_REQUIRE_TOOLS("qemu-img");
  test::TempDir dir;
  // One layer: raw, the layer file itself is the disk (auto picks raw too).
  for (ComposeMode mode : {ComposeMode::Raw, ComposeMode::Auto}) {
    std::string out = dir / ("raw-" + to_string(mode));
    ComposeResult raw = compose(options_for(mode, {test::tarindex_layer(1)}, out));
    EXPECT_EQ(raw.mode, ComposeMode::Raw);
    EXPECT_EQ(raw.disk_path, fs::canonical(test::tarindex_layer(1)).string());
    ASSERT_EQ(raw.storages.size(), 1u);
  }
  // Four layers: gpt (auto picks gpt), each partition holding its whole file, tar included.
  for (ComposeMode mode : {ComposeMode::Gpt, ComposeMode::Auto}) {
    std::string out = dir / ("gpt-" + to_string(mode));
    ComposeResult gpt = compose(options_for(mode, tarindex_top_first(), out));
    EXPECT_EQ(gpt.mode, ComposeMode::Gpt);
    ASSERT_EQ(gpt.layers.size(), 4u);
    std::string disk = to_raw(out + "/disk.vmdk", out + "/disk.raw");
    for (const auto& layer : gpt.layers) {
      SCOPED_TRACE(layer.path);
      std::string file = test::read_file(layer.path);
      EXPECT_GE(layer.partition_sectors * 512, layer.info.layer_end);
      ASSERT_LE(layer.first_lba * 512 + file.size(), disk.size());
      EXPECT_TRUE(disk.compare(layer.first_lba * 512, file.size(), file) == 0)
          << "partition " << *layer.partition_number << " does not hold the layer file";
    }
  }
}

TEST(ComposeRealFixtures, TarIndexLayerCutShortStillNeedsItsDevice) {
  test::TempDir dir;
  std::string cut = dir / "cut.erofs";
  test::write_file(cut, test::read_file(test::tarindex_layer(1)).substr(0, 1 << 20));
  std::string refused;
  for (ComposeMode mode : {ComposeMode::Gpt, ComposeMode::Raw}) {
    try {
      plan_compose(options_for(mode, {cut}, dir / "out"));
      ADD_FAILURE() << "a layer whose tar is cut off was composed in " << to_string(mode);
    } catch (const Error& error) {
      refused = error.what();
    }
    EXPECT_THAT(refused, HasSubstr("layer 0 (" + cut + "): a multi-device image (1 devices)"));
    EXPECT_THAT(refused,
                HasSubstr("device 1 is mapped at bytes 4096..1069568, beyond the file's 1048576"));
  }
  EXPECT_THAT(refused, HasSubstr("needs flat mode with its device blobs"));
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// dm-verity of a tar-index layer would have to cover its tar, and the guest reads a protected
// multi-device lower's devices only through per-device trees: refused, naming the layer, and
// nothing is written.
TEST(ComposeRealFixtures, TarIndexLayerWithDmVerityIsRefused) {
  test::TempDir dir;
  std::string layer = dir / "layer.erofs";
  fs::copy_file(test::tarindex_layer(3), layer);
  auto formatted = test::cli({"verity", "format", layer});
  ASSERT_EQ(formatted.exit_code, 0) << formatted.out << formatted.err;
  ASSERT_TRUE(fs::exists(layer + ".dmverity"));
  // The tree never lands on the tar the device table maps (9728 bytes).
  auto sidecar = nlohmann::json::parse(test::read_file(layer + ".dmverity"));
  EXPECT_GE(sidecar.at("hashoffset").get<uint64_t>(), 9728u);
  auto composed = test::cli({"compose", "--mode", "raw", "-o", dir / "out", layer});
  EXPECT_NE(composed.exit_code, 0);
  EXPECT_THAT(composed.err, HasSubstr("layer 0 (" + layer +
                                      "): dm-verity for a layer whose device "
                                      "table maps devices inside its own file"));
  EXPECT_FALSE(fs::exists(dir / "out"));
  auto off = test::cli({"compose", "--mode", "raw", "--verity", "off", "-o", dir / "out", layer});
  EXPECT_EQ(off.exit_code, 0) << off.err;
}

}  // namespace
}  // namespace evmdk::host
