// erofs-vmdk lint / map, run as a user would run them.
#include <gmock/gmock.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "evmdk/vmdk/descriptor.h"
#include "test_support.h"

namespace evmdk::vmdk {
namespace {

using ::testing::HasSubstr;

struct Fixture {
  test::TempDir dir;
  std::string a = dir / "a.erofs";
  std::string b = dir / "b.erofs";
  std::string desc = dir / "disk.vmdk";
  Fixture() {
    test::write_file(a, std::string(8 * 512, 'a'));
    test::write_file(b, std::string(4 * 512, 'b'));
  }
  void write(const std::string& extents) {
    test::write_file(desc,
                     "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                     "createType=\"monolithicFlat\"\n\n# Extent description\n" +
                         extents);
  }
};

TEST(CliLint, WriterOutputIsClean) {
  Fixture f;
  Descriptor d;
  d.extents = {{f.a, 8, 0}, {f.b, 2, 2}};
  write_descriptor_file(f.desc, d);
  auto result = test::cli({"lint", f.desc});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_EQ(result.out, f.desc + ": no findings\n");
  auto json = test::cli({"lint", f.desc, "--json"});
  EXPECT_EQ(json.exit_code, 0);
  auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["errors"], 0);
  EXPECT_TRUE(parsed["findings"].empty());
}

TEST(CliLint, ErrorsExitNonZeroWithIdsAndLines) {
  Fixture f;
  f.write("RW 8 FLAT \"" + f.a + "\" 0\nRDONLY 4 FLAT \"" + f.b + "\" 0\nRW 4 FLAT \"" + f.b +
          "\" 0x1\n");
  auto result = test::cli({"lint", f.desc});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.out, HasSubstr(f.desc + ":9: error: RDONLY"));
  EXPECT_THAT(result.out, HasSubstr("[rdonly-extent]"));
  EXPECT_THAT(result.out, HasSubstr(f.desc + ":10: error: hexadecimal offset 0x1"));
  EXPECT_THAT(result.out, HasSubstr("2 error(s), 0 warning(s)"));
  auto json = test::cli({"lint", "--json", f.desc});
  EXPECT_EQ(json.exit_code, 1);
  auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["errors"], 2);
  EXPECT_EQ(parsed["findings"][0]["id"], "rdonly-extent");
  EXPECT_EQ(parsed["findings"][1]["id"], "hex-offset");
  EXPECT_EQ(parsed["findings"][1]["line"], 10);
}

TEST(CliLint, WarningsAloneExitZero) {
  Fixture f;
  f.write("RW 8 FLAT \"a.erofs\" 0\n");
  auto result = test::cli({"lint", f.desc});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("warning"));
  EXPECT_THAT(result.out, HasSubstr("[relative-path]"));
}

TEST(CliLint, MissingFileAndExtentFilesAreErrors) {
  Fixture f;
  auto missing = test::cli({"lint", f.dir / "nope.vmdk"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("nope.vmdk"));
  f.write("RW 8 FLAT \"" + f.dir / "gone.erofs" + "\" 0\nRW 8 FLAT \"" + f.b + "\" 0\n");
  auto result = test::cli({"lint", f.desc});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.out, HasSubstr(":8: error: extent file"));
  EXPECT_THAT(result.out, HasSubstr("[missing-extent-file]"));
  EXPECT_THAT(result.out, HasSubstr(":9: error: extent reaches byte 4096"));
  EXPECT_THAT(result.out, HasSubstr("[extent-past-eof]"));
}

TEST(CliMap, PrintsTheLayoutQemuSees) {
  Fixture f;
  // The blank line makes QEMU add the b extent twice; map shows what QEMU does.
  f.write("RW 8 FLAT \"" + f.a + "\" 0\n\nRW 2 FLAT \"" + f.b + "\" 1\n");
  auto result = test::cli({"map", f.desc, "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto parsed = nlohmann::json::parse(result.out);
  EXPECT_EQ(parsed["virtual_size"], 12 * 512);
  ASSERT_EQ(parsed["extents"].size(), 3u);
  EXPECT_EQ(parsed["extents"][1],
            nlohmann::json({{"start", 4096}, {"length", 1024}, {"path", f.b}, {"offset", 512},
                            {"line", 10}}));
  EXPECT_EQ(parsed["extents"][2]["start"], 5120);
  EXPECT_THAT(result.err, HasSubstr("1 lint error(s)"));
  auto text = test::cli({"map", f.desc});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_THAT(text.out, HasSubstr("virtual size: 6144 bytes in 3 extents"));
  auto at = test::cli({"map", f.desc, "--at", "4100", "--json"});
  ASSERT_EQ(at.exit_code, 0) << at.err;
  auto loc = nlohmann::json::parse(at.out);
  EXPECT_EQ(loc["path"], f.b);
  EXPECT_EQ(loc["file_offset"], 516);
  EXPECT_EQ(loc["bytes_left"], 1020);
  auto past = test::cli({"map", f.desc, "--at", "6144"});
  EXPECT_EQ(past.exit_code, 1);
  EXPECT_THAT(past.err, HasSubstr("past the end of the 6144-byte disk"));
}

TEST(CliMap, WriterOutputMapsWithoutANote) {
  Fixture f;
  Descriptor d;
  d.extents = {{f.a, 8, 0}, {f.b, 2, 2}};
  write_descriptor_file(f.desc, d);
  auto result = test::cli({"map", f.desc});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err, "");
  EXPECT_THAT(result.out, HasSubstr(fmt::format("{:>16} {:>16} {:>16} {:>6}  {}\n", 4096, 1024,
                                                1024, 9, f.b)));
}

TEST(CliMap, RefusesWhatQemuCannotOpen) {
  Fixture f;
  f.write("RW 8 flat \"" + f.a + "\" 0\n");
  auto result = test::cli({"map", f.desc});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(f.desc));
  EXPECT_THAT(result.err, HasSubstr("Invalid extent line"));
}

}  // namespace
}  // namespace evmdk::vmdk
