// verify against real composed disks (mkfs.erofs layers, host::compose): an intact disk passes;
// a flipped layer byte, a damaged superblock, a damaged GPT entry or tail, a swapped layer
// file, a non-zero gap and a re-pointed extent each fail, naming the layer and its offset.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verify/verify.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;

// verify_disk on a compose output directory, with digests, no progress bar.
VerifyReport verify_dir(const std::string& dir) {
  VerifyOptions options;
  options.target = dir;
  options.digest = true;
  options.progress = false;
  return verify_disk(options);
}

void patch_byte(const std::string& path, uint64_t offset, uint8_t x = 0xFF) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  byte ^= x;
  ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

std::string joined(const std::vector<std::string>& problems) {
  std::string out;
  for (const auto& p : problems) out += p + "\n";
  return out;
}

class VerifyDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "sha256sum");
    // Three layers with different sizes; the middle one has a 200 KiB file so a byte deep in
    // its data (not the superblock) can be flipped.
    std::string big(200 * 1024, 'm');
    for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
    test::make_tree(dir / "src-top", {{"etc/motd", "top layer\n"}});
    test::make_tree(dir / "src-middle", {{"opt/app/blob", big}});
    test::make_tree(dir / "src-base", {{"etc/os-release", "ID=test\n"}, {"usr/bin/", ""}});
    for (const char* name : {"top", "middle", "base"}) {
      std::string path = dir / (std::string(name) + ".erofs");
      test::make_erofs(dir / ("src-" + std::string(name)), path, {}, {"-Enoinline_data"});
      layers.push_back(path);
    }
    ComposeOptions options;
    options.mode = ComposeMode::Gpt;
    for (const auto& layer : layers) options.layers.push_back({layer, {}});
    options.output_dir = out;
    composed = compose(options);
  }

  VerifyReport run(bool digest = true, std::optional<std::string> expect = std::nullopt, bool direct = false) {
    VerifyOptions options;
    options.target = out;
    options.digest = digest;
    options.expect_path = expect;
    options.direct = direct;
    options.progress = false;
    return verify_disk(options);
  }

  // A sha256sum-format expect file recorded from the intact layers.
  std::string record_expect() {
    std::string expect = dir / "expect.sha256";
    std::string cmd = "cd '" + dir.path() + "' && sha256sum top.erofs middle.erofs base.erofs > expect.sha256";
    EXPECT_EQ(test::sh(cmd).exit_code, 0);
    return expect;
  }

  test::TempDir dir;
  std::string out = dir / "disk";
  std::vector<std::string> layers;
  ComposeResult composed;
};

TEST_F(VerifyDisk, IntactDiskPassesWithDigestsEqualToSha256sumOfEachLayer) {
  std::string expect = record_expect();
  VerifyReport report = run(true, expect);
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  ASSERT_EQ(report.layers.size(), 3u);
  std::string sums = test::read_file(expect);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(report.layers[i].path, fs::canonical(layers[i]).string());
    EXPECT_EQ(report.layers[i].partition, std::optional<uint32_t>(i + 1));
    EXPECT_EQ(report.layers[i].partuuid, composed.layers[i].partuuid);
    EXPECT_FALSE(report.layers[i].erofs_uuid.empty());
    EXPECT_NE(sums.find(report.layers[i].sha256), std::string::npos) << "layer " << i;
    EXPECT_EQ(report.layers[i].expected_sha256, report.layers[i].sha256);
  }
  EXPECT_EQ(report.stats.bytes, report.disk_bytes) << "every byte of the disk is read once";
  // O_DIRECT gives the same answer.
  VerifyReport direct = run(true, expect, true);
  EXPECT_TRUE(direct.ok()) << joined(direct.problems);
  EXPECT_GT(direct.stats.direct_bytes, 0u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(direct.layers[i].sha256, report.layers[i].sha256);
}

TEST_F(VerifyDisk, FlippedDataByteInALayerFailsAgainstExpectedDigestsNamingTheLayer) {
  std::string expect = record_expect();
  patch_byte(layers[1], 100 * 1024 + 5);  // deep inside the middle layer's file data
  VerifyReport report = run(true, expect);
  ASSERT_FALSE(report.ok());
  std::string problems = joined(report.problems);
  EXPECT_NE(problems.find("layer 1 (" + fs::canonical(layers[1]).string() + ")"), std::string::npos) << problems;
  EXPECT_NE(problems.find("SHA-256"), std::string::npos) << problems;
  EXPECT_NE(problems.find("disk offset " + std::to_string(composed.layers[1].first_lba * 512)), std::string::npos) << problems;
  EXPECT_EQ(report.problems.size(), 1u) << problems;
  EXPECT_TRUE(report.layers[0].ok);
  EXPECT_FALSE(report.layers[1].ok);
}

TEST_F(VerifyDisk, DamagedSuperblockFailsWithoutDigestsNamingTheLayer) {
  patch_byte(layers[2], 1024 + 48);  // a UUID byte: the superblock checksum no longer matches
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  std::string problems = joined(report.problems);
  EXPECT_NE(problems.find("layer 2 (" + fs::canonical(layers[2]).string() + ")"), std::string::npos) << problems;
  EXPECT_NE(problems.find("superblock checksum"), std::string::npos) << problems;
  EXPECT_FALSE(report.layers[2].ok);
  EXPECT_TRUE(report.layers[0].ok && report.layers[1].ok) << problems;
}

TEST_F(VerifyDisk, DamagedGptEntryFailsNamingThePartitionsLayer) {
  // Entry array at LBA 2; partition 2's PARTUUID starts 16 bytes into its 128-byte entry.
  patch_byte(out + "/gpt-head.img", 2 * 512 + 128 + 16);
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  std::string problems = joined(report.problems);
  EXPECT_NE(problems.find("layer 1 (" + fs::canonical(layers[1]).string() + "): GPT partition 2 has PARTUUID"),
            std::string::npos) << problems;
  EXPECT_NE(problems.find("GPT at"), std::string::npos) << "the CRC check reports it too:\n" << problems;
  EXPECT_FALSE(report.layers[1].ok);
  EXPECT_TRUE(report.layers[0].ok && report.layers[2].ok) << problems;
}

TEST_F(VerifyDisk, DamagedBackupGptFails) {
  auto tail_size = fs::file_size(out + "/gpt-tail.img");
  patch_byte(out + "/gpt-tail.img", tail_size - 512 + 60);  // backup header's disk GUID
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("GPT"), std::string::npos) << joined(report.problems);
}

TEST_F(VerifyDisk, SwappedLayerFilesFailNamingBothLayers) {
  std::string temp = dir / "swap.tmp";
  fs::rename(layers[0], temp);
  fs::rename(layers[2], layers[0]);
  fs::rename(temp, layers[2]);
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  std::string problems = joined(report.problems);
  EXPECT_NE(problems.find("layer 0 (" + fs::canonical(layers[0]).string() + ")"), std::string::npos) << problems;
  EXPECT_NE(problems.find("layer 2 (" + fs::canonical(layers[2]).string() + ")"), std::string::npos) << problems;
  EXPECT_NE(problems.find("EROFS UUID"), std::string::npos) << problems;
  EXPECT_TRUE(report.layers[1].ok) << problems;
}

TEST_F(VerifyDisk, NonZeroByteInAGapFails) {
  ASSERT_TRUE(fs::exists(out + "/zero.img"));
  patch_byte(out + "/zero.img", 0);
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("gap after layer 0 (" + fs::canonical(layers[0]).string() + ") at disk offset"),
            std::string::npos) << joined(report.problems);
  EXPECT_NE(joined(report.problems).find("non-zero byte"), std::string::npos) << joined(report.problems);
}

TEST_F(VerifyDisk, ExtentRepointedToAnotherFileFails) {
  std::string descriptor = test::read_file(out + "/disk.vmdk");
  std::string middle = fs::canonical(layers[1]).string(), base = fs::canonical(layers[2]).string();
  auto at = descriptor.find("\"" + middle + "\"");
  ASSERT_NE(at, std::string::npos);
  descriptor.replace(at + 1, middle.size(), base);
  test::write_file(out + "/disk.vmdk", descriptor);
  VerifyReport report = run(false);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("layer 1 (" + middle + ")"), std::string::npos) << joined(report.problems);
}

TEST_F(VerifyDisk, ExpectFileKeysByIndexPathOrNameAndUnknownKeysAreReported) {
  VerifyReport intact = run(true);
  ASSERT_TRUE(intact.ok()) << joined(intact.problems);
  std::string json = dir / "expect.json";
  test::write_file(json, "{\"0\": \"" + intact.layers[0].sha256 + "\", \"" + intact.layers[1].path + "\": \"" +
                             intact.layers[1].sha256 + "\", \"base.erofs\": \"" + intact.layers[2].sha256 + "\"}");
  VerifyReport keyed = run(false, json);
  EXPECT_TRUE(keyed.ok()) << joined(keyed.problems);
  for (const auto& layer : keyed.layers) EXPECT_EQ(layer.expected_sha256, layer.sha256);

  test::write_file(json, "{\"layers\": {\"7\": \"" + intact.layers[0].sha256 + "\"}}");
  VerifyReport unknown = run(false, json);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(joined(unknown.problems).find("'7' names no layer"), std::string::npos) << joined(unknown.problems);

  test::write_file(json, "{\"0\": \"abc\"}");
  EXPECT_THROW(run(false, json), Error);
  test::write_file(json, "not a digest line\n");
  EXPECT_THROW(run(false, json), Error);
}

TEST_F(VerifyDisk, CommandExitsNonZeroNamingTheLayerAndPrintsJson) {
  auto ok = test::cli({"verify", out, "--digest", "sha256", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto json = nlohmann::json::parse(ok.out);
  EXPECT_TRUE(json.at("ok").get<bool>());
  EXPECT_EQ(json.at("layers").size(), 3u);
  EXPECT_EQ(json.at("layers")[0].at("sha256").get<std::string>().size(), 64u);
  EXPECT_TRUE(ok.err.empty()) << "no progress bar when stderr is not a terminal: " << ok.err;

  std::string expect = dir / "recorded.json";
  auto record = test::cli({"verify", out + "/disk.vmdk", "--write-expect", expect});
  ASSERT_EQ(record.exit_code, 0) << record.err;
  patch_byte(layers[0], 3000);
  auto bad = test::cli({"verify", out, "--expect", expect});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("layer 0 (" + fs::canonical(layers[0]).string() + ")"), std::string::npos) << bad.err;
  auto bad_digest = test::cli({"verify", out, "--digest", "md5"});
  EXPECT_EQ(bad_digest.exit_code, 1);
  EXPECT_NE(bad_digest.err.find("--digest md5"), std::string::npos) << bad_digest.err;
}


TEST_F(VerifyDisk, BareDescriptorWithoutLayoutIsCheckedAgainstItsOwnGpt) {
  std::string alone = dir / "alone";
  fs::create_directories(alone);
  fs::copy_file(out + "/disk.vmdk", alone + "/disk.vmdk");  // extent paths are absolute
  VerifyOptions options;
  options.target = alone + "/disk.vmdk";
  options.digest = true;
  options.progress = false;
  options.trust_descriptor = true;  // issue 13 item 5: a bare descriptor needs the explicit flag
  VerifyReport report = verify_disk(options);
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_TRUE(report.layout.empty());
  ASSERT_EQ(report.layers.size(), 3u);
  EXPECT_EQ(report.layers[1].path, fs::canonical(layers[1]).string());
  EXPECT_EQ(report.layers[1].length, fs::file_size(layers[1]));
  patch_byte(layers[1], 1024);  // the EROFS magic
  report = verify_disk(options);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("layer 1 (" + fs::canonical(layers[1]).string() + ")"), std::string::npos)
      << joined(report.problems);
}

TEST(VerifyRawDisk, SingleLayerRawComposeIsVerified) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  test::make_tree(dir / "src", {{"etc/motd", "only layer\n"}});
  test::make_erofs(dir / "src", dir / "only.erofs");
  ComposeOptions options;
  options.mode = ComposeMode::Raw;
  options.layers.push_back({dir / "only.erofs", {}});
  options.output_dir = dir / "disk";
  compose(options);
  VerifyReport report = verify_dir(dir / "disk");
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  ASSERT_EQ(report.layers.size(), 1u);
  EXPECT_EQ(report.mode, "raw");
  EXPECT_EQ(report.stats.bytes, fs::file_size(dir / "only.erofs"));
}

// A descriptor for rootless QEMU names /dev/fdset/N; verify reads the files qemu.json says go
// into those fdsets, so the same disk is checked as without --fdset (and damage still found).
TEST_F(VerifyDisk, FdsetDescriptorIsReadThroughQemuJsonsFdsets) {
  ComposeOptions options;
  options.mode = ComposeMode::Gpt;
  for (const auto& layer : layers) options.layers.push_back({layer, {}});
  options.output_dir = dir / "fdset-disk";
  options.fdset = true;
  compose(options);
  ASSERT_NE(test::read_file(dir / "fdset-disk/disk.vmdk").find("/dev/fdset/"), std::string::npos);
  VerifyReport report = verify_dir(dir / "fdset-disk");
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  VerifyReport plain = run(true);
  ASSERT_EQ(report.layers.size(), plain.layers.size());
  for (size_t i = 0; i < plain.layers.size(); ++i) EXPECT_EQ(report.layers[i].sha256, plain.layers[i].sha256);

  patch_byte(layers[0], 1024);  // the top layer's EROFS superblock
  report = verify_dir(dir / "fdset-disk");
  EXPECT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("layer 0"), std::string::npos) << joined(report.problems);

  // Without qemu.json there is no way to know the files: refused, naming what is missing.
  fs::remove(dir / "fdset-disk/qemu.json");
  try {
    verify_dir(dir / "fdset-disk");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("/dev/fdset/1"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("qemu.json"), std::string::npos) << error.what();
  }
}

// Flat (fsmeta) mode: the fsmeta and its blob at their mapped_blkaddr, gaps of zeros checked.
TEST(VerifyFlatDisk, FlatComposeIsVerifiedAndADirtyGapIsNamed) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  auto fixture = test::make_multi_device(dir.path());
  // Move the blob's slot one block further out, so the disk has a zero gap before it.
  test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks + 1);
  ComposeOptions options;
  options.mode = ComposeMode::Flat;
  options.layers = {{fixture.fsmeta, {}}, {fixture.blob, {}}};
  options.output_dir = dir / "disk";
  compose(options);
  VerifyReport report = verify_dir(dir / "disk");
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_EQ(report.mode, "flat");
  ASSERT_EQ(report.layers.size(), 2u);
  EXPECT_EQ(report.layers[1].disk_offset, uint64_t{fixture.fsmeta_blocks + 1} * 4096);

  // The gap reads zero.img: a non-zero byte there is something the guest would see.
  std::string zero = dir / "disk/zero.img";
  ASSERT_TRUE(fs::exists(zero));
  patch_byte(zero, 10);
  report = verify_dir(dir / "disk");
  EXPECT_FALSE(report.ok());
  EXPECT_NE(joined(report.problems).find("gap after layer 0"), std::string::npos) << joined(report.problems);
}

TEST(VerifyCommand, ComposeThenVerifyFromTheCommandLine) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  std::vector<std::string> args{"compose", "-o", dir / "out"};
  for (const char* name : {"top", "middle", "base"}) {
    std::string src = dir / name;
    test::make_tree(src, {{std::string("etc/") + name, name}});
    test::make_erofs(src, dir / (std::string(name) + ".erofs"));
    args.push_back(dir / (std::string(name) + ".erofs"));
  }
  auto composed = test::cli(args);
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto verified = test::cli({"verify", dir / "out", "--digest", "sha256", "--direct"});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_NE(verified.out.find("verified: 3 layers"), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("ok   layer 2 (" + fs::canonical(dir / "base.erofs").string() + ") at LBA"),
            std::string::npos) << verified.out;
}

}  // namespace
}  // namespace evmdk::host
