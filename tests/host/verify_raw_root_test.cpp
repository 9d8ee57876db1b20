// `erofs-vmdk verify` on raw composed disks (compose --format raw, disk.img assembled by reflink)
// on a loop-mounted XFS with reflink=1: gpt and flat images verify (digests equal to sha256sum
// of each layer file), and what a user would want to hear about is reported naming the layer
// (or area) and the disk offset: a flipped byte in a layer's range, a truncated or extended
// image (both sizes), a damaged GPT header, a layer file rewritten after compose (the image
// still holds the old bytes), a damaged dm-verity tree; --verity raw outputs verify (and
// veritysetup accepts each partition of the image). And
// `hook cleanup` of a raw (reflinked) hook output removes disk.img while the layer files keep
// their blocks.
#include <gmock/gmock.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <nlohmann/json.hpp>

#include "containerd_mounts.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/host/verity/verity.h"
#include "volume_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(test::read_file(path));
}

std::string sha256_of(const std::string& path) {
  auto run = test::run({"sha256sum", path});
  return run.out.substr(0, 64);
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::string byte = test::read_bytes(path, offset, 1);
  byte[0] = static_cast<char>(byte[0] ^ 0x5A);
  test::write_bytes(path, offset, byte);
}

class VerifyRawRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE(missing_prerequisites());
    EVMDK_REQUIRE_TOOLS("veritysetup", "sha256sum");
    volume_ = std::make_unique<LoopVolume>(dir_ / "volume.img", dir_ / "mnt", "xfs", 512 * kMiB);
    for (int i = 0; i < 3; ++i) {
      std::string name = "layer" + std::to_string(i);
      test::make_layer(volume_->path(), name,
                       "11111111-2222-4333-8444-55555555570" + std::to_string(i),
                       std::string(static_cast<size_t>(i) * 9000 + 100, 'k'));
      layers_.push_back(fs::canonical(*volume_ / (name + ".erofs")).string());
    }
  }

  // compose --format raw (reflink only: no --allow-copy), checked to be shared.
  std::string compose_raw(const std::string& name, const std::vector<std::string>& head,
                          const std::vector<std::string>& inputs) {
    std::string out = *volume_ / name;
    std::vector<std::string> args = {"compose", "--format", "raw", "-o", out};
    args.insert(args.end(), head.begin(), head.end());
    args.insert(args.end(), inputs.begin(), inputs.end());
    auto composed = test::cli(args);
    EXPECT_EQ(composed.exit_code, 0) << composed.err;
    auto layout = read_json(out + "/layout.json");
    EXPECT_EQ(layout["format"], "raw");
    EXPECT_EQ(layout["raw_image"]["reflinked"], true) << layout["raw_image"].dump();
    return out;
  }

  test::CommandResult verify(const std::vector<std::string>& extra, const std::string& out) {
    std::vector<std::string> args = {"verify", "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(out);
    return test::cli(args);
  }

  nlohmann::json verify_json(const std::string& out, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"verify", "--json", "--digest", "sha256"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(out);
    auto run = test::cli(args);
    EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
    return run.out.empty() ? nlohmann::json{} : nlohmann::json::parse(run.out);
  }

  uint64_t layer_offset(const std::string& out, size_t index) {
    return read_json(out + "/layout.json")["layers"][index]["first_lba"].get<uint64_t>() * 512;
  }

  std::string name(size_t index) const {
    return "layer " + std::to_string(index) + " (" + layers_[index] + ")";
  }

  test::TempDir dir_;
  std::unique_ptr<LoopVolume> volume_;
  std::vector<std::string> layers_;
};

TEST_F(VerifyRawRoot, GptImagePassesWithEachLayersDigest) {
  std::string out = compose_raw("gpt", {"--mode", "gpt"}, layers_);
  auto report = verify_json(out);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["ok"], true) << report.dump(2);
  EXPECT_EQ(report["image"], out + "/disk.img");
  EXPECT_EQ(report["descriptor"], "");
  EXPECT_EQ(report["mode"], "gpt");
  EXPECT_EQ(report["disk_bytes"], fs::file_size(out + "/disk.img"));
  ASSERT_EQ(report["layers"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(report["layers"][i]["path"], layers_[i]);
    EXPECT_EQ(report["layers"][i]["sha256"], sha256_of(layers_[i])) << i;
  }
  // The image path itself is a target too.
  EXPECT_EQ(verify({}, out + "/disk.img").exit_code, 0);
}

TEST_F(VerifyRawRoot, FlippedByteInALayersRangeIsNamedWithItsOffset) {
  std::string out = compose_raw("gpt", {"--mode", "gpt"}, layers_);
  uint64_t at = layer_offset(out, 1) + 6000;
  flip_byte(out + "/disk.img", at);
  auto run = verify({}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr(name(1) + " at disk offset " + std::to_string(at) + " (LBA " +
                                 std::to_string(at / 512) + "): " + out + "/disk.img differs from " +
                                 layers_[1] + " at its byte 6000"));
  EXPECT_THAT(run.err, Not(HasSubstr(name(0))));
  EXPECT_THAT(run.err, Not(HasSubstr(name(2))));
}

TEST_F(VerifyRawRoot, TruncatedOrExtendedImageIsReportedWithBothSizes) {
  std::string out = compose_raw("gpt", {"--mode", "gpt"}, layers_);
  std::string image = out + "/disk.img";
  uint64_t size = fs::file_size(image);
  fs::resize_file(image, size - 4096);
  auto run = verify({}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, AllOf(HasSubstr(image + " is " + std::to_string(size - 4096) + " bytes"),
                             HasSubstr("make " + std::to_string(size) + " bytes"),
                             HasSubstr("truncated")));

  std::string out2 = compose_raw("gpt2", {"--mode", "gpt"}, layers_);
  fs::resize_file(out2 + "/disk.img", size + kMiB);
  run = verify({}, out2);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err,
              AllOf(HasSubstr(out2 + "/disk.img is " + std::to_string(size + kMiB) + " bytes"),
                    HasSubstr("make " + std::to_string(size) + " bytes"), HasSubstr("extended")));
}

TEST_F(VerifyRawRoot, DamagedGptHeaderIsReported) {
  std::string out = compose_raw("gpt", {"--mode", "gpt"}, layers_);
  flip_byte(out + "/disk.img", 512 + 24);  // the primary header's current LBA field
  auto run = verify({}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, AllOf(HasSubstr("GPT"), HasSubstr("CRC")));
}

TEST_F(VerifyRawRoot, LayerFileRewrittenAfterComposeIsReportedAndTheImageKeepsItsBytes) {
  std::string out = compose_raw("gpt", {"--mode", "gpt"}, layers_);
  std::string image = out + "/disk.img";
  uint64_t offset = layer_offset(out, 2);
  uint64_t size = fs::file_size(layers_[2]);
  std::string composed = test::read_bytes(image, offset, size);
  ASSERT_EQ(composed, test::read_file(layers_[2]));

  // Rewritten in place with another layer's bytes (same inode, new superblock).
  test::make_layer(volume_->path(), "other", "11111111-2222-4333-8444-555555555799",
                   std::string(18100, 'z'));
  test::write_bytes(layers_[2], 0, test::read_file(*volume_ / "other.erofs"));
  auto run = verify({}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, AllOf(HasSubstr(name(2) + ": the layer file changed after compose"),
                             HasSubstr(image + " still holds the layer as composed"),
                             HasSubstr("no longer matches the layer file")));
  EXPECT_EQ(test::read_bytes(image, offset, size), composed);  // copy-on-write

  // A byte deep in layer 1 rewritten in place (its identity, the head, unchanged): the image
  // and the file differ there.
  flip_byte(layers_[1], 9000);
  run = verify({}, out);
  EXPECT_THAT(run.err, HasSubstr(name(1) + " at disk offset " +
                                 std::to_string(layer_offset(out, 1) + 9000)));
  EXPECT_THAT(run.err, HasSubstr("rewritten in place after compose"));
}

TEST_F(VerifyRawRoot, FlatImagePassesAndAFlippedBlobByteIsNamed) {
  auto fixture = test::make_multi_device(volume_->path());
  std::string out = compose_raw("flat", {"--mode", "flat"}, {fixture.fsmeta, fixture.blob});
  auto report = verify_json(out);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["mode"], "flat");
  ASSERT_EQ(report["layers"].size(), 2u);
  EXPECT_EQ(report["layers"][1]["sha256"], sha256_of(fixture.blob));
  uint64_t at = report["layers"][1]["disk_offset"].get<uint64_t>() + 100;
  flip_byte(out + "/disk.img", at);
  auto run = verify({}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr("layer 1 (" + fs::canonical(fixture.blob).string() +
                                 ") at disk offset " + std::to_string(at)));
}

TEST_F(VerifyRawRoot, VerityImagesVerifyAndADamagedTreeIsNamed) {
  for (const auto& layer : layers_) verity_format(layer, {});
  std::string out = compose_raw("verity", {"--mode", "gpt", "--verity", "on"}, layers_);
  auto report = verify_json(out, {"--verity"});
  ASSERT_TRUE(report.is_object());
  for (const auto& layer : report["layers"]) EXPECT_EQ(layer["verity"], "verified") << layer;
  // And veritysetup agrees, on each partition of the image as the guest's dm-verity sees it.
  auto layout = read_json(out + "/layout.json");
  for (const auto& layer : layout["layers"]) {
    uint64_t first = layer["partition_first_lba"], last = layer["partition_last_lba"];
    auto loop = test::run({"losetup", "--find", "--show", "--read-only", "--offset",
                           std::to_string(first * 512), "--sizelimit",
                           std::to_string((last + 1 - first) * 512), out + "/disk.img"});
    ASSERT_EQ(loop.exit_code, 0) << loop.err;
    std::string device = loop.out.substr(0, loop.out.find('\n'));
    auto checked = test::run({"veritysetup", "verify", device, device,
                              layer["verity"]["roothash"].get<std::string>(),
                              "--hash-offset=" + std::to_string(layer["verity"]["hash_offset"].get<uint64_t>())});
    test::run({"losetup", "--detach", device});
    EXPECT_EQ(checked.exit_code, 0) << layer["path"] << checked.out << checked.err;
  }

  // A tree byte of layer 0 changed in the image (the layer file keeps its tree).
  uint64_t tree = layout["layers"][0]["verity"]["hash_disk_offset"].get<uint64_t>() + 4096;
  flip_byte(out + "/disk.img", tree);
  auto run = verify({"--verity"}, out);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr(name(0) + ": dm-verity: the stored hash tree differs from its "
                                           "data at disk offset " +
                                 std::to_string(tree)));

  auto fixture = test::make_multi_device(volume_->path());
  verity_format(fixture.fsmeta, {});
  verity_format(fixture.blob, {});
  std::string flat = compose_raw("verity-flat", {"--mode", "flat", "--verity", "on"},
                                 {fixture.fsmeta, fixture.blob});
  report = verify_json(flat, {"--verity"});
  ASSERT_TRUE(report.is_object());
  ASSERT_EQ(report["layers"].size(), 2u);
  for (const auto& layer : report["layers"]) EXPECT_EQ(layer["verity"], "verified") << layer;
  // The blob's hash area sits after the last device: a byte there is compared too.
  layout = read_json(flat + "/layout.json");
  uint64_t area = layout["layers"][1]["verity"]["hash_disk_offset"].get<uint64_t>() + 4096;
  flip_byte(flat + "/disk.img", area);
  run = verify({}, flat);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr("dm-verity hash area of layer 1 (" +
                                 fs::canonical(fixture.blob).string() + ") at disk offset " +
                                 std::to_string(area)));
}

TEST_F(VerifyRawRoot, HookCleanupRemovesTheImageAndTheLayersKeepTheirBlocks) {
  std::string rwlayer = *volume_ / "rwlayer.img";
  HookRequest request;
  request.id = "c1";
  request.state_dir = *volume_ / "state";
  request.mounts = parse_mount_list_text(
      test::containerd_block_mode_list(rwlayer, 8388608, {layers_[1], layers_[0]}).dump(), "test");
  request.disk_format = DiskFormat::Raw;  // reflink only: no copy allowed
  std::vector<std::string> bytes;
  for (const auto& layer : layers_) bytes.push_back(test::read_file(layer));
  nlohmann::json output = run_hook(request);
  std::string image = *volume_ / "state/c1/lowers/disk.img";
  ASSERT_TRUE(fs::exists(image)) << output.dump(2);
  EXPECT_EQ(verify({}, *volume_ / "state/c1/lowers").exit_code, 0);
  auto shared = [](const std::string& path) {
    uint64_t bytes = 0;
    for (const auto& e : fiemap(path, 0, fs::file_size(path))) {
      if (e.flags & FIEMAP_EXTENT_SHARED) bytes += e.length;
    }
    return bytes;
  };
  for (size_t i = 0; i < 2; ++i) EXPECT_GT(shared(layers_[i]), 0u) << layers_[i];
  std::vector<uint64_t> mapped;
  for (size_t i = 0; i < 2; ++i) {
    mapped.push_back(mapped_bytes(fiemap(layers_[i], 0, fs::file_size(layers_[i]))));
  }

  auto report = cleanup_hook("c1", *volume_ / "state");
  EXPECT_THAT(report.left, ::testing::IsEmpty());
  EXPECT_THAT(report.removed, ::testing::Contains(image));
  EXPECT_FALSE(fs::exists(image));
  // XFS frees an unlinked file's blocks in the background (deferred inode inactivation):
  // wait, bounded, for the image's references to go.
  for (int tries = 0; tries < 200 && shared(layers_[0]) + shared(layers_[1]) != 0; ++tries) {
    (void)volume_->free_bytes();  // syncfs + statfs push the background work
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(layers_[i]);
    EXPECT_EQ(test::read_file(layers_[i]), bytes[i]);
    // The same blocks, now the layer's alone again.
    EXPECT_EQ(mapped_bytes(fiemap(layers_[i], 0, fs::file_size(layers_[i]))), mapped[i]);
    EXPECT_EQ(shared(layers_[i]), 0u);
  }
}

}  // namespace
}  // namespace evmdk::host
