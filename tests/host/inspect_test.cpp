// `erofs-vmdk inspect` with DAX coverage: a layer file, a composed VMDK output, a raw GPT disk
// (pmem readiness before and after padding + sgdisk -e), a composed raw output (--allow-copy:
// reached as DIR/disk.img and as DIR/disk.vmdk), and a layer the walk refuses (shown, not
// fatal).
#include "evmdk/host/inspect/inspect.h"

#include <gmock/gmock.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "sgdisk");
    // Two files with tails: DAX-served with -Enoinline_data, lost to inlining without it.
    test::make_tree(dir / "tree", {{"etc/config", std::string(5000, 'c')},
                                   {"bin/tool", std::string(12000, 't')},
                                   {"var/empty/", ""}});
    test::make_erofs(dir / "tree", dax, "00000000-0000-4000-8000-0000000000d1",
                     {"-Enoinline_data"});
    test::make_erofs(dir / "tree", inl, "00000000-0000-4000-8000-0000000000d2");
  }
  nlohmann::json inspect_json(const std::string& path) {
    auto result = test::cli({"inspect", "--json", path});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return result.exit_code == 0 ? nlohmann::json::parse(result.out) : nlohmann::json::object();
  }
  std::string inspect_text(const std::string& path) {
    auto result = test::cli({"inspect", path});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return result.out;
  }
  test::TempDir dir;
  std::string dax = dir / "dax.erofs";
  std::string inl = dir / "inline.erofs";
};

TEST_F(InspectTest, LayerShowsDaxCoverageAndTheFix) {
  auto good = inspect_json(dax);
  EXPECT_EQ(good["type"], "erofs");
  EXPECT_EQ(good["uuid"], "00000000-0000-4000-8000-0000000000d1");
  EXPECT_EQ(good["dax"]["files"], 2);
  EXPECT_EQ(good["dax"]["dax_bytes"], 17000);
  EXPECT_EQ(good["dax"]["dax_percent"], 100.0);
  EXPECT_THAT(inspect_text(dax), HasSubstr("DAX serves 100.0% of 17000 file bytes (2 of 2 files)"));

  auto bad = inspect_json(inl);
  EXPECT_EQ(bad["dax"]["dax_bytes"], 0);
  EXPECT_EQ(bad["dax"]["inline_tail"]["files"], 2);
  EXPECT_EQ(bad["dax"]["causes"][0]["fix"], "-Enoinline_data");
  EXPECT_THAT(inspect_text(inl),
              AllOf(HasSubstr("DAX serves 0.0% of 17000 file bytes (0 of 2 files)"),
                    HasSubstr("17000 bytes in 2 files with inlined tails (fix: mkfs.erofs "
                              "-Enoinline_data)")));
  // The library returns the same document.
  EXPECT_EQ(inspect(inl)["dax"]["inline_tail"]["bytes"], 17000);
}

TEST_F(InspectTest, LayerTheWalkRefusesIsShownNotFatal) {
  // A root nid far past the end of the image (superblock checksum kept valid).
  test::patch_superblock(dax, 14, 0xFFFF, 2);
  auto json = inspect_json(dax);
  EXPECT_EQ(json["uuid"], "00000000-0000-4000-8000-0000000000d1") << "probe still works";
  EXPECT_THAT(json["dax"]["error"].get<std::string>(),
              AllOf(HasSubstr(dax + ": DAX coverage: inode nid 65535"),
                    HasSubstr("lies outside the image")));
  EXPECT_THAT(inspect_text(dax), HasSubstr("DAX    cannot tell: " + dax + ": DAX coverage"));
}

TEST_F(InspectTest, ComposedVmdkShowsDaxPerLayer) {
  std::string out = dir / "out";
  auto compose = test::cli({"compose", "--mode", "gpt", "-o", out, dax, inl});
  ASSERT_EQ(compose.exit_code, 0) << compose.err;
  auto json = inspect_json(out + "/disk.vmdk");
  EXPECT_EQ(json["type"], "composed");
  EXPECT_EQ(json["format"], "vmdk");
  ASSERT_EQ(json["layers"].size(), 2u);
  EXPECT_EQ(json["layers"][0]["dax"]["dax_percent"], 100.0);
  EXPECT_EQ(json["layers"][1]["dax"]["dax_percent"], 0.0);
  EXPECT_FALSE(json.contains("pmem")) << "a VMDK cannot be a pmem device";
  EXPECT_FALSE(json["layers"][0].contains("sharing"));
  auto text = inspect_text(out + "/disk.vmdk");
  EXPECT_THAT(text, AllOf(HasSubstr("composed gpt disk"), HasSubstr("    DAX serves 100.0%"),
                          HasSubstr("    DAX serves 0.0%")));
}

TEST_F(InspectTest, RawGptDiskPmemReadinessAndPartitionDax) {
  std::string out = dir / "out";
  ASSERT_EQ(test::cli({"compose", "--mode", "gpt", "-o", out, dax, inl}).exit_code, 0);
  std::string raw = dir / "disk.raw";
  ASSERT_EQ(test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", out + "/disk.vmdk", raw})
                .exit_code,
            0);
  auto json = inspect_json(raw);
  EXPECT_EQ(json["type"], "gpt");
  ASSERT_EQ(json["partitions"].size(), 2u);
  EXPECT_EQ(json["partitions"][0]["dax"]["dax_percent"], 100.0) << "read at the partition offset";
  EXPECT_EQ(json["partitions"][1]["dax"]["inline_tail"]["files"], 2);
  EXPECT_EQ(json["pmem"]["ready"], false);
  ASSERT_EQ(json["pmem"]["problems"].size(), 1u) << json["pmem"].dump();
  EXPECT_THAT(json["pmem"]["problems"][0].get<std::string>(),
              HasSubstr("is not a multiple of 2 MiB"));

  // Padded to 2 MiB: the backup GPT is now short of the end.
  const uint64_t padded = (fs::file_size(raw) / (2 << 20) + 1) * (2 << 20);
  fs::resize_file(raw, padded);
  json = inspect_json(raw);
  EXPECT_EQ(json["pmem"]["ready"], false);
  EXPECT_THAT(json["pmem"].dump(), HasSubstr("the backup GPT is not in the last sector"));
  EXPECT_THAT(inspect_text(raw), HasSubstr("pmem   not ready: the backup GPT"));

  ASSERT_EQ(test::run({"sgdisk", "-e", raw}).exit_code, 0);
  json = inspect_json(raw);
  EXPECT_EQ(json["pmem"]["ready"], true) << json["pmem"].dump();
  EXPECT_THAT(inspect_text(raw), AllOf(HasSubstr("pmem   ready"), HasSubstr("    DAX serves")));
}

TEST_F(InspectTest, ComposedRawOutputByImageAndByDescriptorName) {
  std::string out = dir / "raw";
  auto compose = test::cli(
      {"compose", "--mode", "gpt", "--format", "raw", "--allow-copy", "-o", out, dax, inl});
  ASSERT_EQ(compose.exit_code, 0) << compose.err;
  ASSERT_TRUE(fs::exists(out + "/disk.img"));
  for (const std::string& path : {out + "/disk.img", out + "/disk.vmdk"}) {
    SCOPED_TRACE(path);
    auto json = inspect_json(path);
    EXPECT_EQ(json["type"], "composed");
    EXPECT_EQ(json["format"], "raw");
    EXPECT_EQ(json["path"], out + "/disk.img");
    ASSERT_EQ(json["layers"].size(), 2u);
    EXPECT_EQ(json["layers"][0]["dax"]["dax_percent"], 100.0);
    EXPECT_EQ(json["layers"][1]["dax"]["dax_percent"], 0.0);
    EXPECT_TRUE(json["layers"][0].contains("sharing"));
    ASSERT_TRUE(json.contains("pmem"));
    EXPECT_EQ(json["pmem"]["size"], fs::file_size(out + "/disk.img"));
    EXPECT_EQ(json["pmem"]["ready"], fs::file_size(out + "/disk.img") % (2 << 20) == 0);
  }
  EXPECT_THAT(inspect_text(out + "/disk.img"),
              AllOf(HasSubstr("composed gpt disk"), HasSubstr("pmem   ")));
  // A moved output directory is still recognised (layout.json's disk is looked up beside it).
  fs::rename(out, dir / "moved");
  EXPECT_EQ(inspect_json(dir / "moved/disk.img")["format"], "raw");
}

TEST(PmemReadiness, RulesNameTheRegion) {
  auto ok = pmem_readiness(4 << 20, true, true, {{"partition 1", 1 << 20, 1 << 20}});
  EXPECT_EQ(ok["ready"], true);
  auto bad = pmem_readiness(4 << 20, false, false, {{"blob 1 (b.blob)", 1024 * 513, 8192}});
  EXPECT_EQ(bad["ready"], false);
  ASSERT_EQ(bad["problems"].size(), 1u) << "flat: no GPT to check";
  EXPECT_THAT(bad["problems"][0].get<std::string>(),
              HasSubstr("blob 1 (b.blob) at byte 525312 (8192 bytes) does not start and end on "
                        "4 KiB"));
}

}  // namespace
}  // namespace evmdk::host
