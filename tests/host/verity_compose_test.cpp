// The --verity policy applied to compose: which Storage objects carry X-kata.dmverity.*, what
// is refused, and that the composed disk really holds each protected layer's tree at
// hashoffset from its partition start (checked with veritysetup on the converted raw disk).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/guest/verity.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/host/verity/verity_compose.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

bool has_dmverity(const Storage& storage) {
  for (const auto& option : storage.options) {
    if (option.rfind("X-kata.dmverity", 0) == 0) return true;
  }
  return false;
}

class VerityCompose : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir_.path(), "top", "11111111-2222-4333-8444-555555555501", "t");
    test::make_layer(dir_.path(), "bottom", "11111111-2222-4333-8444-555555555502", "b");
    top_ = dir_ / "top.erofs";
    bottom_ = dir_ / "bottom.erofs";
    verity_format(top_, {});
  }
  ComposeOptions options(ComposeMode mode, std::vector<std::string> layers) {
    ComposeOptions o;
    o.mode = mode;
    for (auto& layer : layers) o.layers.push_back({layer, {}});
    o.output_dir = dir_ / "out";
    o.check_blkid = false;
    return o;
  }
  test::TempDir dir_;
  std::string top_, bottom_;
};

TEST_F(VerityCompose, AutoProtectsLayersWithDataAndReportsTheOthers) {
  auto o = options(ComposeMode::Gpt, {top_, bottom_});
  auto report = apply_verity_policy(o, VerityPolicy::kAuto);
  EXPECT_EQ(report.unprotected(), std::vector<std::string>{bottom_});
  EXPECT_EQ(report.to_json()["layers"][0]["protected"], true);
  auto result = plan_compose(o);
  ASSERT_EQ(result.storages.size(), 2u);
  auto params = guest::verity_params_from_options(result.storages[0].options, "lower-0");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->root_hash, read_verity_sidecar(top_ + ".dmverity").root_hash);
  EXPECT_FALSE(has_dmverity(result.storages[1]));
  // The partition holds the whole file, tree included.
  EXPECT_GE(result.layers[0].sectors * 512, report.layers[0].hash_end);
}

TEST_F(VerityCompose, OnRefusesAnUnprotectedLayerOffAddsNothing) {
  auto o = options(ComposeMode::Gpt, {top_, bottom_});
  EXPECT_THAT([&] { apply_verity_policy(o, VerityPolicy::kOn); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("layer 1"), HasSubstr("bottom.erofs"),
                                                    HasSubstr("--verity=on"))));
  o = options(ComposeMode::Gpt, {top_, bottom_});
  o.layers[0].extra_options = {"X-kata.dmverity.roothash=00"};  // e.g. from elsewhere: replaced
  apply_verity_policy(o, VerityPolicy::kOff);
  for (const auto& storage : plan_compose(o).storages) EXPECT_FALSE(has_dmverity(storage));

  verity_format(bottom_, {});
  o = options(ComposeMode::Gpt, {top_, bottom_});
  o.layers[0].extra_options = {"X-kata.dmverity.roothash=00"};
  auto report = apply_verity_policy(o, VerityPolicy::kOn);
  EXPECT_TRUE(report.unprotected().empty());
  for (const auto& storage : plan_compose(o).storages) {
    // Parsed without "given 2 times": the stale option was replaced.
    EXPECT_TRUE(guest::verity_params_from_options(storage.options, storage.mount_point));
  }
}

TEST_F(VerityCompose, RawModeCarriesTheOptions) {
  auto o = options(ComposeMode::Auto, {top_});
  apply_verity_policy(o, VerityPolicy::kOn);
  auto result = plan_compose(o);
  EXPECT_EQ(result.mode, ComposeMode::Raw);
  ASSERT_EQ(result.storages.size(), 1u);
  EXPECT_TRUE(guest::verity_params_from_options(result.storages[0].options, "lower-0"));
}

TEST_F(VerityCompose, BrokenSidecarIsAnErrorEvenInAuto) {
  test::write_file(bottom_ + ".dmverity", R"({"roothash":"00","hashoffset":4096})");
  auto o = options(ComposeMode::Gpt, {top_, bottom_});
  EXPECT_THAT([&] { apply_verity_policy(o, VerityPolicy::kAuto); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("layer 1"), HasSubstr("broken dm-verity data"))));
}

// Flat (fsmeta) disk: a blob's tree cannot follow it (the next device starts right after its
// slot), so compose puts every tree after the last device and the options name that disk
// offset. Checked the way the guest reads it: veritysetup over the converted raw disk, with the
// fsmeta's data from the disk start and the blob's data from its slot, and the trees from the
// whole disk; a flipped byte in either data area then fails.
TEST_F(VerityCompose, FlatDiskCarriesEveryTreeAndVeritysetupVerifiesItFromTheDisk) {
  EVMDK_REQUIRE_TOOLS("qemu-img", "veritysetup");
  auto fixture = test::make_multi_device(dir_.path());
  verity_format(fixture.fsmeta, {});
  verity_format(fixture.blob, {});
  auto o = options(ComposeMode::Auto, {fixture.fsmeta, fixture.blob});
  auto report = apply_verity_policy(o, VerityPolicy::kOn);
  EXPECT_TRUE(report.unprotected().empty());
  auto result = compose(o);
  ASSERT_EQ(result.mode, ComposeMode::Flat);
  ASSERT_EQ(result.storages.size(), 1u);
  const auto& storage_options = result.storages[0].options;
  auto meta = guest::verity_params_from_options(storage_options, "fsmeta");
  auto blob = guest::verity_params_from_options(device_verity_options(storage_options, 1), "device 1");
  ASSERT_TRUE(meta);
  ASSERT_TRUE(blob);
  EXPECT_EQ(meta->root_hash, read_verity_sidecar(fixture.fsmeta + ".dmverity").root_hash);
  EXPECT_EQ(blob->root_hash, read_verity_sidecar(fixture.blob + ".dmverity").root_hash);
  uint64_t data_end = uint64_t{fixture.fsmeta_blocks + fixture.blob_blocks} * 4096;
  EXPECT_GE(meta->hash_offset, data_end);
  EXPECT_GT(blob->hash_offset, meta->hash_offset);
  EXPECT_EQ(meta->hash_offset % 4096, 0u);
  EXPECT_EQ(blob->hash_offset % 4096, 0u);
  auto layout = nlohmann::json::parse(test::read_file(dir_ / "out/layout.json"));
  EXPECT_EQ(layout["layers"][0]["verity"]["hash_disk_offset"], meta->hash_offset);
  EXPECT_EQ(layout["layers"][1]["verity"]["hash_disk_offset"], blob->hash_offset);

  std::string raw = dir_ / "disk.raw";
  auto convert = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", result.disk_path, raw});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  std::string blob_slice = dir_ / "blob-slot.img";
  auto dd = test::run({"dd", "if=" + raw, "of=" + blob_slice, "bs=4096",
                       fmt::format("skip={}", fixture.fsmeta_blocks),
                       fmt::format("count={}", fixture.blob_blocks), "status=none"});
  ASSERT_EQ(dd.exit_code, 0) << dd.err;
  auto veritysetup_verify = [&](const std::string& data, const guest::VerityParams& params) {
    return test::run({"veritysetup", "verify", data, raw, params.root_hash,
                      fmt::format("--hash-offset={}", params.hash_offset)});
  };
  auto good_meta = veritysetup_verify(raw, *meta);
  EXPECT_EQ(good_meta.exit_code, 0) << good_meta.err;
  auto good_blob = veritysetup_verify(blob_slice, *blob);
  EXPECT_EQ(good_blob.exit_code, 0) << good_blob.err;

  std::string bytes = test::read_file(blob_slice);
  bytes[100] = static_cast<char>(bytes[100] ^ 1);
  test::write_file(blob_slice, bytes);
  EXPECT_NE(veritysetup_verify(blob_slice, *blob).exit_code, 0);
  bytes = test::read_file(raw);
  bytes[4096 * fixture.fsmeta_blocks - 1] ^= 1;  // the fsmeta's last block
  test::write_file(raw, bytes);
  EXPECT_NE(veritysetup_verify(raw, *meta).exit_code, 0);

  // `verify` accepts the disk as composed (the tree extents are part of the layout).
  auto verify = test::cli({"verify", dir_ / "out"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

// An fsmeta holds every inode, so it is a layer like the others: auto reports it when it has
// no verity data (its blob is still protected), on refuses it.
TEST_F(VerityCompose, FlatAutoReportsAnUnprotectedFsmetaAndOnRefusesIt) {
  auto fixture = test::make_multi_device(dir_.path());
  verity_format(fixture.blob, {});
  auto o = options(ComposeMode::Flat, {fixture.fsmeta, fixture.blob});
  auto report = apply_verity_policy(o, VerityPolicy::kAuto);
  EXPECT_EQ(report.unprotected(), std::vector<std::string>{fixture.fsmeta});
  auto result = plan_compose(o);
  ASSERT_EQ(result.storages.size(), 1u);
  EXPECT_FALSE(has_dmverity(result.storages[0]));
  EXPECT_TRUE(guest::verity_params_from_options(
      device_verity_options(result.storages[0].options, 1), "device 1"));

  o = options(ComposeMode::Flat, {fixture.fsmeta, fixture.blob});
  EXPECT_THAT([&] { apply_verity_policy(o, VerityPolicy::kOn); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("layer 0"), HasSubstr("fsmeta.erofs"),
                                                    HasSubstr("--verity=on"))));
}

// A tree over more (or less) than the blob's slot would verify bytes that are not the device's
// on the disk: refused, naming the device and the fix.
TEST_F(VerityCompose, FlatRefusesATreeThatDoesNotCoverExactlyTheSlot) {
  auto fixture = test::make_multi_device(dir_.path());
  VerityFormatOptions longer;
  longer.hash_offset = uint64_t{fixture.blob_blocks + 1} * 4096;
  verity_format(fixture.blob, longer);
  auto o = options(ComposeMode::Flat, {fixture.fsmeta, fixture.blob});
  apply_verity_policy(o, VerityPolicy::kAuto);
  EXPECT_THAT([&] { plan_compose(o); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("device 1"), HasSubstr("blob.img"),
                                                    HasSubstr("--hash-offset"))));
}

// End to end on the host: the composed gpt disk, converted to raw by qemu-img, holds each
// protected partition's data + superblock + tree such that veritysetup verifies it with the
// root hash and hash offset compose put in the Storage options.
TEST_F(VerityCompose, ComposedDiskVerifiesWithVeritysetup) {
  EVMDK_REQUIRE_TOOLS("qemu-img", "veritysetup");
  verity_format(bottom_, {});
  auto o = options(ComposeMode::Gpt, {top_, bottom_});
  apply_verity_policy(o, VerityPolicy::kOn);
  auto result = compose(o);
  std::string raw = dir_ / "disk.raw";
  auto convert = test::run({"qemu-img", "convert", "-f", result.disk_format, "-O", "raw",
                            result.disk_path, raw});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  for (size_t i = 0; i < result.layers.size(); ++i) {
    const auto& layer = result.layers[i];
    auto params = guest::verity_params_from_options(result.storages[i].options, "lower");
    ASSERT_TRUE(params);
    std::string partition = dir_ / fmt::format("part{}.img", i);
    auto dd = test::run({"dd", "if=" + raw, "of=" + partition, "bs=512",
                         fmt::format("skip={}", layer.first_lba), fmt::format("count={}", layer.sectors),
                         "status=none"});
    ASSERT_EQ(dd.exit_code, 0) << dd.err;
    auto verify = test::run({"veritysetup", "verify", partition, partition, params->root_hash,
                             fmt::format("--hash-offset={}", params->hash_offset)});
    EXPECT_EQ(verify.exit_code, 0) << "layer " << i << ": " << verify.err;
    // And one flipped byte in the partition's data fails the same check.
    std::string bytes = test::read_file(partition);
    bytes[5000] = static_cast<char>(bytes[5000] ^ 1);
    test::write_file(partition, bytes);
    auto bad = test::run({"veritysetup", "verify", partition, partition, params->root_hash,
                          fmt::format("--hash-offset={}", params->hash_offset)});
    EXPECT_NE(bad.exit_code, 0) << "layer " << i;
  }
}

}  // namespace
}  // namespace evmdk::host

namespace evmdk::host {
namespace {

// `erofs-vmdk compose --verity ...`: the CLI applies the policy and says which layers are
// unprotected in auto mode.
TEST_F(VerityCompose, ComposeCommandAppliesThePolicy) {
  auto on = test::cli({"compose", "--mode", "gpt", "--verity", "on", "-o", dir_ / "on", top_, bottom_});
  EXPECT_NE(on.exit_code, 0);
  EXPECT_THAT(on.err, AllOf(HasSubstr("bottom.erofs"), HasSubstr("--verity=on")));
  EXPECT_FALSE(fs::exists(dir_ / "on/storage.json"));

  auto automatic = test::cli({"compose", "--mode", "gpt", "-o", dir_ / "auto", top_, bottom_});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_THAT(automatic.err, HasSubstr("not protected by dm-verity (no sidecar): " + bottom_));
  auto storages = storages_from_json(nlohmann::json::parse(test::read_file(dir_ / "auto/storage.json")));
  ASSERT_EQ(storages.size(), 2u);
  EXPECT_TRUE(guest::verity_params_from_options(storages[0].options, "lower-0"));
  EXPECT_FALSE(has_dmverity(storages[1]));

  auto off = test::cli({"compose", "--mode", "gpt", "--verity", "off", "-o", dir_ / "off", top_, bottom_});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  storages = storages_from_json(nlohmann::json::parse(test::read_file(dir_ / "off/storage.json")));
  for (const auto& storage : storages) EXPECT_FALSE(has_dmverity(storage));
}

// `verify --verity` predicts the guest's dm-verity on the host: an intact protected disk is
// verified layer by layer; a flipped data byte (root no longer matches what the guest gets) and
// a flipped tree byte (data intact, stored tree wrong) each fail, naming the layer.
TEST_F(VerityCompose, VerifyRecomputesEveryProtectedLayersTree) {
  verity_format(bottom_, {});
  auto o = options(ComposeMode::Gpt, {top_, bottom_});
  apply_verity_policy(o, VerityPolicy::kOn);
  compose(o);
  auto good = test::cli({"verify", "--verity", dir_ / "out"});
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
  EXPECT_THAT(good.out, HasSubstr("layer 1 (" + bottom_ + ")"));
  EXPECT_THAT(good.out, HasSubstr("dm-verity verified"));

  auto flip = [](const std::string& path, uint64_t offset) {
    std::string bytes = test::read_file(path);
    bytes[offset] = static_cast<char>(bytes[offset] ^ 1);
    test::write_file(path, bytes);
  };
  auto sidecar = read_verity_sidecar(bottom_ + ".dmverity");
  flip(bottom_, sidecar.hash_offset - 10);  // the last data block
  auto data = test::cli({"verify", "--verity", dir_ / "out"});
  EXPECT_NE(data.exit_code, 0);
  EXPECT_THAT(data.err, AllOf(HasSubstr("layer 1 (" + bottom_ + ")"), HasSubstr("hashes to root"),
                              HasSubstr(sidecar.root_hash)));
  flip(bottom_, sidecar.hash_offset - 10);  // restored

  auto top = read_verity_sidecar(top_ + ".dmverity");
  flip(top_, top.hash_offset + 4096 + 5);  // first tree block, after the superblock block
  auto tree = test::cli({"verify", "--verity", dir_ / "out"});
  EXPECT_NE(tree.exit_code, 0);
  EXPECT_THAT(tree.err, AllOf(HasSubstr("layer 0 (" + top_ + ")"), HasSubstr("stored hash tree differs")));
  // Without --verity the tree is not recomputed (the layout's other checks still pass).
  EXPECT_EQ(test::cli({"verify", dir_ / "out"}).exit_code, 0);
}

// The same from the command line for a flat disk: auto names the unprotected fsmeta, on
// refuses it, and once it is formatted the disk's storage carries both inputs' options.
TEST_F(VerityCompose, ComposeCommandProtectsAFlatDisk) {
  auto fixture = test::make_multi_device(dir_.path());
  verity_format(fixture.blob, {});
  auto automatic = test::cli({"compose", "--mode", "flat", "-o", dir_ / "flat-auto", fixture.fsmeta, fixture.blob});
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_THAT(automatic.err, HasSubstr("not protected by dm-verity (no sidecar): " + fixture.fsmeta));
  auto on = test::cli({"compose", "--mode", "flat", "--verity", "on", "-o", dir_ / "flat-on", fixture.fsmeta, fixture.blob});
  EXPECT_NE(on.exit_code, 0);
  EXPECT_THAT(on.err, AllOf(HasSubstr("fsmeta.erofs"), HasSubstr("--verity=on")));
  EXPECT_FALSE(fs::exists(dir_ / "flat-on"));

  verity_format(fixture.fsmeta, {});
  on = test::cli({"compose", "--mode", "flat", "--verity", "on", "-o", dir_ / "flat-on", fixture.fsmeta, fixture.blob});
  ASSERT_EQ(on.exit_code, 0) << on.err;
  auto storages = storages_from_json(nlohmann::json::parse(test::read_file(dir_ / "flat-on/storage.json")));
  ASSERT_EQ(storages.size(), 1u);
  EXPECT_TRUE(guest::verity_params_from_options(storages[0].options, "fsmeta"));
  EXPECT_TRUE(guest::verity_params_from_options(device_verity_options(storages[0].options, 1), "device 1"));
  auto verify = test::cli({"verify", "--verity", dir_ / "flat-on"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("layer 1 (" + fixture.blob + ")"));
  EXPECT_THAT(verify.out, HasSubstr("dm-verity verified"));
}

}  // namespace
}  // namespace evmdk::host
