// `erofs-vmdk inspect` and `erofs-vmdk compose` as a user runs them.
#include <fcntl.h>
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/host/compose/gpt.h"
#include "evmdk/unique_fd.h"
#include "layer_fixtures.h"

namespace evmdk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class CliHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-00000000000a");
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-00000000000b");
  }
  test::TempDir dir;
};

TEST_F(CliHostTest, InspectPrintsTheSuperblock) {
  auto text = test::cli({"inspect", dir / "top.erofs"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, AllOf(HasSubstr("00000000-0000-4000-8000-00000000000a"),
                              HasSubstr("blocks of 4096 bytes"), HasSubstr("sb_chksum")));
  auto json = test::cli({"inspect", "--json", dir / "top.erofs"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto info = nlohmann::json::parse(json.out);
  EXPECT_EQ(info["uuid"], "00000000-0000-4000-8000-00000000000a");
  EXPECT_EQ(info["block_size"], 4096);
}

TEST_F(CliHostTest, ComposeThenInspectTheDescriptorAndTheRawDisk) {
  std::string out = dir / "out";
  auto compose =
      test::cli({"compose", "--mode", "gpt", "-o", out, dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(compose.exit_code, 0) << compose.err;
  EXPECT_THAT(compose.out, AllOf(HasSubstr("gpt mode"), HasSubstr("partition 2")));
  EXPECT_TRUE(fs::exists(out + "/disk.vmdk"));

  auto composed = test::cli({"inspect", "--json", out + "/disk.vmdk"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto layout = nlohmann::json::parse(composed.out);
  EXPECT_EQ(layout["mode"], "gpt");
  EXPECT_EQ(layout["layers"][1]["probe"]["uuid"], "00000000-0000-4000-8000-00000000000b");

  std::string raw = dir / "disk.raw";
  ASSERT_EQ(test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", out + "/disk.vmdk", raw})
                .exit_code,
            0);
  auto disk = test::cli({"inspect", "--json", raw});
  ASSERT_EQ(disk.exit_code, 0) << disk.err;
  auto table = nlohmann::json::parse(disk.out);
  ASSERT_EQ(table["partitions"].size(), 2u);
  EXPECT_EQ(table["partitions"][0]["erofs"]["uuid"], "00000000-0000-4000-8000-00000000000a");
  EXPECT_EQ(table["partitions"][0]["partuuid"], layout["layers"][0]["partuuid"]);
}

// A GPT with an empty entry between two partitions: inspect names each partition by its entry
// number (the number Linux and the guest give it), not by its place in the list.
TEST_F(CliHostTest, InspectNumbersPartitionsAfterAnEmptyEntryByTheirEntry) {
  std::string out = dir / "out";
  ASSERT_EQ(
      test::cli({"compose", "--mode", "gpt", "-o", out, dir / "top.erofs", dir / "base.erofs"})
          .exit_code,
      0);
  std::string raw = dir / "disk.raw";
  ASSERT_EQ(test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", out + "/disk.vmdk", raw})
                .exit_code,
            0);
  host::gpt::Table table;
  {
    UniqueFd fd = open_or_throw(raw, O_RDONLY);
    table = host::gpt::read_table(fd.get(), raw);
  }
  ASSERT_EQ(table.partitions.size(), 2u);
  table.partitions[1].number = 3;  // entry 2 left empty
  test::write_bytes(raw, 0, host::gpt::render_head(table, host::gpt::kFirstPartitionLba));
  test::write_bytes(raw, (table.total_sectors - host::gpt::tail_sectors(table.entry_count)) * 512,
                    host::gpt::render_tail(table));

  auto disk = test::cli({"inspect", "--json", raw});
  ASSERT_EQ(disk.exit_code, 0) << disk.err;
  auto partitions = nlohmann::json::parse(disk.out)["partitions"];
  ASSERT_EQ(partitions.size(), 2u);
  EXPECT_EQ(partitions[0]["number"], 1);
  EXPECT_EQ(partitions[1]["number"], 3);
  EXPECT_EQ(partitions[1]["erofs"]["uuid"], "00000000-0000-4000-8000-00000000000b");
  auto text = test::cli({"inspect", raw});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out,
              AllOf(HasSubstr("partition 3 'layer-1'"), ::testing::Not(HasSubstr("partition 2 "))));
}

TEST_F(CliHostTest, BadLayerFailsNamingItAndWritesNothing) {
  test::write_file(dir / "junk.erofs", std::string(5000, 'j'));
  std::string out = dir / "out";
  auto result = test::cli({"compose", "-o", out, dir / "top.erofs", dir / "junk.erofs"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr("erofs-vmdk: layer 1"), HasSubstr("junk.erofs"),
                                HasSubstr("not an EROFS image")));
  EXPECT_FALSE(fs::exists(out));
  auto bad_mode = test::cli({"compose", "--mode", "zip", "-o", out, dir / "top.erofs"});
  EXPECT_NE(bad_mode.exit_code, 0);
  EXPECT_THAT(bad_mode.err, HasSubstr("--mode"));
}

TEST_F(CliHostTest, BottomFirstAndFdset) {
  std::string out = dir / "out";
  auto result = test::cli({"compose", "--order", "bottom-first", "--fdset", "-o", out,
                           dir / "base.erofs", dir / "top.erofs"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto qemu = nlohmann::json::parse(test::read_file(out + "/qemu.json"));
  EXPECT_EQ(qemu["fdsets"][1]["path"], dir / "top.erofs") << "partition 1 is the top layer";
  EXPECT_THAT(test::read_file(out + "/disk.vmdk"), HasSubstr("/dev/fdset/1"));
}

}  // namespace
}  // namespace evmdk
