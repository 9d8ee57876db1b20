// Flat mode on a real multi-device EROFS image. erofs-utils 1.5 (Debian 12) cannot merge
// layers into an fsmeta, so the fixture (layer_fixtures.h, make_multi_device) is built by
// `mkfs.erofs --chunksize=4096 --blobdev=blob.img`: a real primary image with a one-slot
// device table plus a real blob device; only the slot's blocks/mapped_blkaddr (which 1.5
// leaves 0) are filled in as erofs-utils 1.7+ writes them. Refusals patch that slot (or add a
// second slot) and recompute the superblock checksum, so only the tested field is wrong.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ComposeFlatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img");
    fixture = test::make_multi_device(dir.path());
  }
  ComposeOptions flat_options(std::vector<std::string> blobs = {}) {
    ComposeOptions options;
    options.mode = ComposeMode::Flat;
    options.layers.push_back({fixture.fsmeta, {}});
    if (blobs.empty()) blobs.push_back(fixture.blob);
    for (const auto& blob : blobs) options.layers.push_back({blob, {}});
    options.output_dir = dir / "out";
    return options;
  }
  std::string refusal(const ComposeOptions& options) {
    std::string message = "no error";
    try {
      compose(options);
    } catch (const Error& error) {
      message = error.what();
    }
    EXPECT_FALSE(fs::exists(options.output_dir)) << "a refused compose wrote output";
    return message;
  }
  std::string to_raw() {
    std::string raw = dir / "flat.raw";
    auto result = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                             dir / "out/disk.vmdk", raw});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return raw;
  }
  test::TempDir dir;
  test::MultiDeviceFixture fixture;
};

TEST_F(ComposeFlatTest, PlacesTheBlobAtItsMappedBlkaddr) {
  ComposeOptions options = flat_options();
  options.mode = ComposeMode::Auto;  // a device table and its blobs: auto picks flat
  ComposeResult result = compose(options);
  EXPECT_EQ(result.mode, ComposeMode::Flat);
  ASSERT_EQ(result.extents.size(), 2u);
  EXPECT_EQ(result.extents[0].role, "fsmeta");
  EXPECT_EQ(result.extents[0].sectors, fixture.fsmeta_blocks * 8u);
  EXPECT_EQ(result.extents[1].role, "device");
  EXPECT_EQ(result.extents[1].first_lba, fixture.fsmeta_blocks * 8u);
  std::string raw = to_raw();
  EXPECT_EQ(test::read_file(raw), test::read_file(fixture.fsmeta) + test::read_file(fixture.blob));
  auto storages = storages_from_json(nlohmann::json::parse(test::read_file(dir / "out/storage.json")));
  ASSERT_EQ(storages.size(), 1u);
  EXPECT_FALSE(has_option(storages[0].options, marker::kPartitionNumber));
  EXPECT_EQ(option_value(storages[0].options, marker::kErofsUuid),
            "8a1b2c3d-0000-4000-8000-00000000f1a7");
}

TEST_F(ComposeFlatTest, SizesFromTheSlotNotTheFileAndFillsGapsWithZeros) {
  // An appended tree on the blob (as containerd appends verity) must not move or grow it,
  // and a slot placed 3 blocks further leaves a zero gap.
  test::write_bytes(fixture.blob, fs::file_size(fixture.blob), std::string(4096 * 2, 'T'));
  test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks + 3);
  ComposeResult result = compose(flat_options());
  ASSERT_EQ(result.extents.size(), 3u);
  EXPECT_EQ(result.extents[1].role, "zero");
  EXPECT_EQ(result.extents[1].sectors, 3u * 8);
  EXPECT_EQ(result.extents[2].sectors, fixture.blob_blocks * 8u);
  std::string raw = to_raw();
  std::string expected = test::read_file(fixture.fsmeta) + std::string(3 * 4096, '\0') +
                         test::read_file(fixture.blob).substr(0, fixture.blob_blocks * 4096u);
  EXPECT_EQ(test::read_file(raw), expected);
}

TEST_F(ComposeFlatTest, RefusesASlotLargerThanItsBlob) {
  test::set_slot(fixture, fixture.blob_blocks + 1, fixture.fsmeta_blocks);
  EXPECT_THAT(refusal(flat_options()),
              AllOf(HasSubstr("device 1"), HasSubstr(fixture.blob), HasSubstr("the file has only")));
}

TEST_F(ComposeFlatTest, RefusesAnEmptySlot) {
  test::set_slot(fixture, 0, 0);  // what erofs-utils 1.5 itself writes
  EXPECT_THAT(refusal(flat_options()), AllOf(HasSubstr("device 1"), HasSubstr("0 blocks")));
}

TEST_F(ComposeFlatTest, RefusesASlotOverlappingTheFsmeta) {
  test::set_slot(fixture, fixture.blob_blocks, 0);
  EXPECT_THAT(refusal(flat_options()),
              AllOf(HasSubstr("device 1"), HasSubstr(fixture.blob), HasSubstr("overlaps the fsmeta")));
}

TEST_F(ComposeFlatTest, RefusesDevicesOutOfOrderOrOverlapping) {
  // A second slot (written over the metadata that follows the table: never mounted) whose
  // device starts inside device 1.
  std::string blob2 = dir / "blob2.img";
  fs::copy_file(fixture.blob, blob2);
  std::string slot(128, '\0');
  test::put_le(slot, 64, fixture.blob_blocks, 4);
  test::put_le(slot, 68, fixture.fsmeta_blocks + 1, 4);
  test::write_bytes(fixture.fsmeta, fixture.slot_offset + 128, slot);
  test::patch_superblock(fixture.fsmeta, 86, 2, 2);
  auto options = flat_options({fixture.blob, blob2});
  options.check_blkid = true;
  EXPECT_THAT(refusal(options),
              AllOf(HasSubstr("device 2"), HasSubstr(blob2), HasSubstr("overlaps the previous device")));
}

TEST_F(ComposeFlatTest, RefusesMixedBlockSizes) {
  // The device is an EROFS image with 512-byte blocks under a 4 KiB fsmeta.
  std::string small = dir / "small.d";
  test::make_tree(small, {{"f", "x"}});
  std::string device = dir / "device.erofs";
  test::make_erofs(small, device);
  std::string sb = test::read_bytes(device, 1024, 128);
  uint32_t blocks = static_cast<uint8_t>(sb[36]) | (static_cast<uint8_t>(sb[37]) << 8);
  test::write_bytes(device, 1024 + 12, std::string(1, '\x09'));
  test::patch_superblock(device, 36, blocks * 8, 4);
  test::set_slot(fixture, blocks, fixture.fsmeta_blocks);
  auto options = flat_options({device});
  options.check_blkid = false;  // libblkid's opinion of the patched device is not the point
  EXPECT_THAT(refusal(options),
              AllOf(HasSubstr("device 1"), HasSubstr(device), HasSubstr("mixed block sizes")));
}

TEST_F(ComposeFlatTest, RefusesTheWrongNumberOfBlobs) {
  std::string blob2 = dir / "blob2.img";
  fs::copy_file(fixture.blob, blob2);
  EXPECT_THAT(refusal(flat_options({fixture.blob, blob2})),
              HasSubstr("has 1 devices in its device table but 2 device blobs were given"));
  ComposeOptions alone;
  alone.mode = ComposeMode::Flat;
  alone.layers.push_back({fixture.fsmeta, {}});
  alone.output_dir = dir / "out";
  EXPECT_THAT(refusal(alone), HasSubstr("but 0 device blobs were given"));
}

TEST_F(ComposeFlatTest, RefusesAMissingBlobAndAPlainLayer) {
  EXPECT_THAT(refusal(flat_options({dir / "missing.img"})),
              AllOf(HasSubstr("layer 1"), HasSubstr("missing.img")));
  test::make_layer(dir.path(), "plain", "");
  ComposeOptions options;
  options.mode = ComposeMode::Flat;
  options.layers = {{dir / "plain.erofs", {}}, {fixture.blob, {}}};
  options.output_dir = dir / "out";
  EXPECT_THAT(refusal(options), HasSubstr("must be a multi-device EROFS image"));
  // And a multi-device image cannot be one GPT partition.
  options.mode = ComposeMode::Gpt;
  options.layers = {{dir / "plain.erofs", {}}, {fixture.fsmeta, {}}};
  EXPECT_THAT(refusal(options), AllOf(HasSubstr("layer 1"), HasSubstr("flat mode")));
}

}  // namespace
}  // namespace evmdk::host
