// verity format against Debian's veritysetup (bit for bit), the containerd sidecar, the
// superblock, and the per-layer options compose hands to the guest.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "evmdk/error.h"
#include "evmdk/guest/verity.h"
#include "evmdk/host/verity/verity.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const std::string kUuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

std::string zero_salt_hex() { return std::string(64, '0'); }

struct Params {
  uint64_t data_blocks;
  std::vector<std::string> ours;    // extra erofs-vmdk verity format arguments
  std::vector<std::string> theirs;  // the same for veritysetup format
};
// How gtest shows a case (instead of raw bytes, pointers included).
void PrintTo(const Params& p, std::ostream* os) {
  *os << p.data_blocks << " blocks";
  for (const auto& arg : p.theirs) *os << ' ' << arg;
}

class BitIdentical : public ::testing::TestWithParam<Params> {};

TEST_P(BitIdentical, SameBytesAndRootHashAsVeritysetup) {
  EVMDK_REQUIRE_TOOLS("veritysetup");
  const Params& p = GetParam();
  test::TempDir dir;
  uint64_t size = p.data_blocks * 4096;
  std::string data = random_bytes(size, static_cast<uint32_t>(p.data_blocks));
  test::write_file(dir / "theirs.img", data);
  test::write_file(dir / "ours.img", data);

  std::vector<std::string> theirs = {"veritysetup", "format", dir / "theirs.img", dir / "theirs.img",
                                     fmt::format("--hash-offset={}", size), "--uuid=" + kUuid};
  bool salt_given = false;
  for (const auto& arg : p.theirs) salt_given = salt_given || arg.rfind("--salt", 0) == 0;
  if (!salt_given) theirs.push_back("--salt=" + zero_salt_hex());  // containerd's default
  theirs.insert(theirs.end(), p.theirs.begin(), p.theirs.end());
  auto reference = test::run(theirs);
  ASSERT_EQ(reference.exit_code, 0) << reference.err;

  std::vector<std::string> ours = {"verity", "format", dir / "ours.img", "--uuid", kUuid, "--json"};
  ours.insert(ours.end(), p.ours.begin(), p.ours.end());
  auto result = test::cli(ours);
  ASSERT_EQ(result.exit_code, 0) << result.err;

  EXPECT_EQ(test::read_file(dir / "ours.img"), test::read_file(dir / "theirs.img"));
  auto json = nlohmann::json::parse(result.out);
  EXPECT_THAT(reference.out, HasSubstr(json["roothash"].get<std::string>()));
  // The sidecar carries what containerd writes.
  auto sidecar = read_verity_sidecar(dir / "ours.img.dmverity");
  EXPECT_EQ(sidecar.root_hash, json["roothash"].get<std::string>());
  EXPECT_EQ(sidecar.hash_offset, size);
}

INSTANTIATE_TEST_SUITE_P(
    Veritysetup, BitIdentical,
    ::testing::Values(Params{1, {}, {}}, Params{2, {}, {}}, Params{128, {}, {}},
                      Params{129, {}, {}}, Params{16385, {}, {}},
                      Params{300, {"--salt", "-"}, {"--salt=-"}},
                      Params{300, {"--salt", "a1b2c3"}, {"--salt=a1b2c3"}},
                      Params{300, {"--hash", "sha512"}, {"--hash=sha512"}},
                      Params{300, {"--format", "0"}, {"--format=0"}},
                      Params{300, {"--data-block-size", "1024", "--hash-block-size", "512"},
                             {"--data-block-size=1024", "--hash-block-size=512"}}),
    // Readable, stable test names: "blocks128", "blocks300_salt_a1b2c3", ...
    [](const ::testing::TestParamInfo<Params>& info) {
      std::string name = fmt::format("blocks{}", info.param.data_blocks);
      for (const auto& arg : info.param.theirs) {
        for (char c : arg) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      }
      return name;
    });

// A real EROFS layer: the hash offset defaults to the EROFS image size, and veritysetup's own
// userspace verifier accepts the result.
TEST(VerityFormat, ErofsLayerVerifiesWithVeritysetup) {
  EVMDK_REQUIRE_TOOLS("veritysetup", "mkfs.erofs");
  test::TempDir dir;
  test::make_tree(dir / "src", {{"etc/motd", "hello\n"}, {"big", random_bytes(300000, 7)}});
  test::make_erofs(dir / "src", dir / "layer.erofs");
  uint64_t erofs_size = fs::file_size(dir / "layer.erofs");

  VerityFormatOptions options;
  auto result = verity_format(dir / "layer.erofs", options);
  EXPECT_EQ(result.sidecar.hash_offset, erofs_size);
  EXPECT_EQ(result.superblock.salt, std::vector<uint8_t>(32, 0));
  EXPECT_EQ(result.file_size, fs::file_size(dir / "layer.erofs"));

  auto verify = test::run({"veritysetup", "verify", dir / "layer.erofs", dir / "layer.erofs",
                           result.sidecar.root_hash,
                           fmt::format("--hash-offset={}", result.sidecar.hash_offset)});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  auto dump = test::run({"veritysetup", "dump", dir / "layer.erofs",
                         fmt::format("--hash-offset={}", result.sidecar.hash_offset)});
  EXPECT_THAT(dump.out, HasSubstr(format_uuid(result.superblock.uuid)));

  // The sidecar is exactly containerd's shape.
  auto json = nlohmann::json::parse(test::read_file(dir / "layer.erofs.dmverity"));
  EXPECT_EQ(json.size(), 2u);
  EXPECT_EQ(json["roothash"], result.sidecar.root_hash);
  EXPECT_EQ(json["hashoffset"], erofs_size);

  auto info = inspect_verity_layer(dir / "layer.erofs");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->superblock, result.superblock);
  EXPECT_EQ(info->hash_end, result.file_size);
}

TEST(VerityFormat, RefusesToFormatTwiceAndReformatsIdenticallyWithForce) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  test::make_tree(dir / "src", {{"a", random_bytes(50000, 3)}});
  test::make_erofs(dir / "src", dir / "layer.erofs");
  VerityFormatOptions options;
  options.uuid = parse_uuid(kUuid);
  auto first = verity_format(dir / "layer.erofs", options);
  std::string bytes = test::read_file(dir / "layer.erofs");

  try {
    verity_format(dir / "layer.erofs", options);
    FAIL() << "second format did not throw";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("already has dm-verity data"));
    EXPECT_THAT(error.what(), HasSubstr("--force"));
  }
  // An interrupted earlier run left junk after the image and no sidecar: the default offset
  // still comes from the EROFS superblock, not the file size, so the result is the same.
  fs::remove(dir / "layer.erofs.dmverity");
  { std::ofstream(dir / "layer.erofs", std::ios::app) << random_bytes(10000, 9); }
  auto again = verity_format(dir / "layer.erofs", options);
  EXPECT_EQ(again.sidecar, first.sidecar);
  EXPECT_EQ(test::read_file(dir / "layer.erofs"), bytes);

  options.force = true;
  auto forced = verity_format(dir / "layer.erofs", options);
  EXPECT_EQ(forced.sidecar, first.sidecar);
  EXPECT_EQ(test::read_file(dir / "layer.erofs"), bytes);
}

TEST(VerityFormat, BadInputNamesTheLayer) {
  test::TempDir dir;
  EXPECT_THROW(verity_format(dir / "missing.erofs", {}), Error);
  test::write_file(dir / "empty.erofs", "");
  try {
    verity_format(dir / "empty.erofs", {});
    FAIL();
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("empty.erofs"));
  }
  test::write_file(dir / "x.img", std::string(8192, 'x'));
  VerityFormatOptions options;
  options.hash_offset = 1000;
  try {
    verity_format(dir / "x.img", options);
    FAIL();
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("hash offset 1000 is not a multiple"));
  }
  options.hash_offset.reset();
  options.algorithm = "nosuchhash";
  EXPECT_THROW(verity_format(dir / "x.img", options), Error);
}

TEST(VeritySuperblock, RoundTripsAndRejectsGarbage) {
  VeritySuperblock sb;
  sb.uuid = parse_uuid(kUuid);
  sb.data_blocks = 12345;
  sb.salt = {1, 2, 3};
  auto bytes = serialize_verity_superblock(sb);
  EXPECT_EQ(parse_verity_superblock(bytes, "x"), sb);
  EXPECT_EQ(format_uuid(sb.uuid), kUuid);

  auto bad = bytes;
  bad[0] = 'X';
  EXPECT_THAT([&] { parse_verity_superblock(bad, "layer.erofs at offset 8192"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("layer.erofs at offset 8192: no dm-verity superblock")));
  bad = bytes;
  bad[80] = 0x01;  // salt size 259
  bad[81] = 0x01;
  EXPECT_THROW(parse_verity_superblock(bad, "x"), Error);
  bad = bytes;
  bad[64] = 0x03;  // data block size not a power of two
  EXPECT_THROW(parse_verity_superblock(bad, "x"), Error);
  EXPECT_THROW(parse_uuid("not-a-uuid"), Error);
}

TEST(VeritySidecar, ParsesContainerdJsonAndNamesTheFileOnErrors) {
  auto sidecar = parse_verity_sidecar(R"({"roothash":"ABCD","hashoffset":4096})", "s");
  EXPECT_EQ(sidecar.root_hash, "abcd");
  EXPECT_EQ(sidecar.hash_offset, 4096u);
  EXPECT_THAT([] { parse_verity_sidecar("{", "/x/layer.erofs.dmverity"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("/x/layer.erofs.dmverity: not valid JSON")));
  EXPECT_THAT([] { parse_verity_sidecar(R"({"hashoffset":1})", "f"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("\"roothash\"")));
  EXPECT_THAT([] { parse_verity_sidecar(R"({"roothash":"ab","hashoffset":-1})", "f"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("\"hashoffset\"")));
  EXPECT_THAT([] { parse_verity_sidecar(R"({"roothash":"xyz","hashoffset":1})", "f"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("not a hex string")));
}

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::write_file(dir_ / "plain.erofs", random_bytes(40960, 1));
    test::write_file(dir_ / "protected.erofs", random_bytes(40960, 2));
    verity_format(dir_ / "protected.erofs", {});
  }
  test::TempDir dir_;
};

TEST_F(PolicyTest, OffAutoOn) {
  EXPECT_TRUE(verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kOff).empty());
  EXPECT_TRUE(verity_options_for_layer(dir_ / "plain.erofs", VerityPolicy::kAuto).empty());
  EXPECT_THAT([&] { verity_options_for_layer(dir_ / "plain.erofs", VerityPolicy::kOn); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("plain.erofs"), HasSubstr("--verity=on"))));
  EXPECT_EQ(parse_verity_policy("auto"), VerityPolicy::kAuto);
  EXPECT_THROW(parse_verity_policy("yes"), Error);
}

// What compose emits is exactly what the guest parses back, with the sidecar's values.
TEST_F(PolicyTest, OptionsRoundTripIntoTheGuest) {
  auto sidecar = read_verity_sidecar(dir_ / "protected.erofs.dmverity");
  auto options = verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kOn);
  EXPECT_EQ(options, verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kAuto));
  auto params = guest::verity_params_from_options(options, "lower-0");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->root_hash, sidecar.root_hash);
  EXPECT_EQ(params->hash_offset, 40960u);
  EXPECT_EQ(params->algorithm, "sha256");
  EXPECT_EQ(params->salt, zero_salt_hex());
  EXPECT_EQ(params->data_block_size, 4096u);
  EXPECT_EQ(params->hash_type, 1u);
}

// auto never silently drops a layer whose verity data is present but wrong.
TEST_F(PolicyTest, BrokenVerityDataIsAnErrorEvenInAuto) {
  auto sidecar = read_verity_sidecar(dir_ / "protected.erofs.dmverity");
  auto stale = sidecar;
  stale.root_hash[0] = stale.root_hash[0] == '0' ? '1' : '0';
  write_verity_sidecar(dir_ / "protected.erofs.dmverity", stale);
  EXPECT_THAT([&] { verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kAuto); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("protected.erofs"),
                                                    HasSubstr("does not match the hash tree"))));
  write_verity_sidecar(dir_ / "protected.erofs.dmverity", sidecar);
  fs::resize_file(dir_ / "protected.erofs", 40960 + 4096);  // tree cut off
  EXPECT_THAT([&] { verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kAuto); },
              ::testing::ThrowsMessage<Error>(HasSubstr("truncated")));
  auto bad_offset = sidecar;
  bad_offset.hash_offset = 4096;
  write_verity_sidecar(dir_ / "protected.erofs.dmverity", bad_offset);
  EXPECT_THAT([&] { verity_options_for_layer(dir_ / "protected.erofs", VerityPolicy::kAuto); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no dm-verity superblock")));
}

// `inspect LAYER` says whether compose would protect it: none, protected (root and tree
// range), or broken (with the reason compose would refuse it for), in text and JSON.
TEST(VerityCli, InspectShowsTheLayersDmVerityState) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  test::make_tree(dir / "src", {{"etc/motd", "hello\n"}});
  test::make_erofs(dir / "src", dir / "layer.erofs");
  auto none = test::cli({"inspect", dir / "layer.erofs"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_THAT(none.out, HasSubstr("dm-verity none (no " + (dir / "layer.erofs.dmverity") + ")"));

  auto formatted = verity_format(dir / "layer.erofs", {});
  auto shown = test::cli({"inspect", dir / "layer.erofs"});
  EXPECT_THAT(shown.out, HasSubstr("dm-verity root " + formatted.sidecar.root_hash));
  auto json = nlohmann::json::parse(test::cli({"inspect", "--json", dir / "layer.erofs"}).out);
  EXPECT_EQ(json["verity"]["state"], "protected");
  EXPECT_EQ(json["verity"]["hashoffset"], formatted.sidecar.hash_offset);

  test::write_file(dir / "layer.erofs.dmverity", R"({"roothash":"00","hashoffset":4096})");
  auto broken = test::cli({"inspect", dir / "layer.erofs"});
  EXPECT_EQ(broken.exit_code, 0) << broken.err;
  EXPECT_THAT(broken.out, HasSubstr("dm-verity BROKEN: "));
  EXPECT_THAT(broken.out, HasSubstr("roothash has 2 hex digits"));
}

TEST(VerityCli, ShowCheckCatchesAFlippedDataByte) {
  test::TempDir dir;
  test::write_file(dir / "layer.erofs", random_bytes(409600, 5));
  ASSERT_EQ(test::cli({"verity", "format", dir / "layer.erofs"}).exit_code, 0);
  auto shown = test::cli({"verity", "show", dir / "layer.erofs", "--check", "--json"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  auto json = nlohmann::json::parse(shown.out);
  EXPECT_EQ(json["checked"], true);
  EXPECT_EQ(json["hashoffset"], 409600);

  {
    std::fstream file(dir / "layer.erofs", std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(123456);
    char c = 0;
    file.read(&c, 1);
    c = static_cast<char>(c ^ 0x01);
    file.seekp(123456);
    file.write(&c, 1);
  }
  // The cheap check (superblock + top block) still passes; the full check does not.
  EXPECT_EQ(test::cli({"verity", "show", dir / "layer.erofs"}).exit_code, 0);
  auto checked = test::cli({"verity", "show", dir / "layer.erofs", "--check"});
  EXPECT_NE(checked.exit_code, 0);
  EXPECT_THAT(checked.err, HasSubstr("data does not match the root hash"));
  EXPECT_THAT(checked.err, HasSubstr("layer.erofs"));


  // A two-level tree (200 blocks: the top block, then two leaf blocks) whose leaf level was
  // changed: the sidecar's root still matches the stored top block (the cheap check passes)
  // and the data is intact, but dm-verity would fail reads under that leaf block.
  test::write_file(dir / "two-level.erofs", random_bytes(200 * 4096, 6));
  ASSERT_EQ(test::cli({"verity", "format", dir / "two-level.erofs"}).exit_code, 0);
  {
    std::string bytes = test::read_file(dir / "two-level.erofs");
    size_t leaf = 200 * 4096 + 4096 /* superblock block */ + 4096 /* top level */ + 40;
    bytes[leaf] = static_cast<char>(bytes[leaf] ^ 0x01);
    test::write_file(dir / "two-level.erofs", bytes);
  }
  EXPECT_EQ(test::cli({"verity", "show", dir / "two-level.erofs"}).exit_code, 0);
  auto tree = test::cli({"verity", "show", dir / "two-level.erofs", "--check"});
  EXPECT_NE(tree.exit_code, 0);
  EXPECT_THAT(tree.err, AllOf(HasSubstr("stored hash tree differs"), HasSubstr("two-level.erofs")));

  auto missing = test::cli({"verity", "show", dir / "nothing.erofs"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("nothing.erofs.dmverity not found"));
}

}  // namespace
}  // namespace evmdk::host
