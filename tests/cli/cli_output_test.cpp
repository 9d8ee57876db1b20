// What the command prints: --json on every command that prints a result, --quiet (nothing on
// stdout, the exit status tells), progress for `verity format` only on a terminal, and a
// failing compose that prints its error and nothing misleading before it.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

class CliOutput : public ::testing::Test {
 protected:
  void SetUp() override { EVMDK_REQUIRE_TOOLS("mkfs.erofs", "script"); }
  // A small EROFS layer (a few MiB of data, so hashing takes measurable reads).
  std::string layer(const std::string& name) {
    std::string tree = temp / (name + "-tree");
    make_tree(tree, {{"etc/motd", "hello\n"}, {"data/blob", std::string(3 << 20, 'x')}});
    std::string image = temp / (name + ".erofs");
    make_erofs(tree, image);
    return image;
  }
  TempDir temp;
};

TEST_F(CliOutput, ComposeOfAMissingLayerPrintsItsErrorAndNothingBeforeIt) {
  std::string missing = temp / "no-such-layer.erofs";
  auto result = cli({"compose", "-o", temp / "out", missing});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.out, "");
  EXPECT_NE(result.err.find(missing), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("dm-verity"), std::string::npos) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

TEST_F(CliOutput, QuietPrintsNothingAndTheExitStatusTells) {
  std::string image = layer("q");
  auto format = cli({"verity", "format", "--quiet", image});
  EXPECT_EQ(format.exit_code, 0) << format.err;
  EXPECT_EQ(format.out + format.err, "");
  EXPECT_TRUE(fs::exists(image + ".dmverity"));

  std::string out = temp / "out";
  auto compose = cli({"compose", "-q", "--mode", "gpt", "--verity", "on", "-o", out, image});
  EXPECT_EQ(compose.exit_code, 0) << compose.err;
  EXPECT_EQ(compose.out + compose.err, "");
  ASSERT_TRUE(fs::exists(out + "/storage.json"));

  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"verify", "--quiet", "--verity", out},
        std::vector<std::string>{"lint", "--quiet", out + "/disk.vmdk"}}) {
    auto result = cli(args);
    EXPECT_EQ(result.exit_code, 0) << args[0] << ": " << result.err;
    EXPECT_EQ(result.out + result.err, "") << args[0];
  }
  // A failure still says why, on stderr, and exits non-zero.
  auto failed = cli({"verify", "--quiet", temp / "nowhere"});
  EXPECT_NE(failed.exit_code, 0);
  EXPECT_EQ(failed.out, "");
  EXPECT_NE(failed.err.find("nowhere"), std::string::npos) << failed.err;
}

TEST_F(CliOutput, JsonOnEveryCommandThatPrintsAResult) {
  std::string image = layer("j");
  std::string out = temp / "out";
  std::vector<std::vector<std::string>> commands = {
      {"verity", "format", "--json", image},
      {"verity", "show", "--json", image},
      {"verity", "list", "--json"},
      {"compose", "--json", "--mode", "gpt", "-o", out, image},
      {"verify", "--json", out},
      {"lint", "--json", out + "/disk.vmdk"},
      {"map", "--json", out + "/disk.vmdk"},
      {"inspect", "--json", image},
      {"guest", "status", "--json", "--id", "c1", "--base", temp / "base"},
      {"hook", "cleanup", "--json", "--id", "c1", "--state-dir", temp / "state"},
  };
  for (const auto& args : commands) {
    auto result = cli(args);
    std::string name = args[0] + (args[1].starts_with("-") ? "" : " " + args[1]);
    EXPECT_EQ(result.exit_code, 0) << name << ": " << result.err;
    EXPECT_TRUE(nlohmann::json::accept(result.out)) << name << " printed: " << result.out;
  }
}

TEST_F(CliOutput, VerityFormatShowsProgressOnATerminalOnly) {
  std::string piped = layer("piped");
  auto plain = cli({"verity", "format", piped});
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.err, "");  // logs and pipes stay clean

  // script(1) gives the command a terminal, as a person at a shell has.
  std::string tty = layer("tty");
  auto shown = run({"script", "-qec", cli_path() + " verity format " + tty, "/dev/null"});
  EXPECT_EQ(shown.exit_code, 0) << shown.out;
  EXPECT_NE(shown.out.find("verity format ["), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("100%"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("root hash:"), std::string::npos) << shown.out;
}

}  // namespace
}  // namespace evmdk::test
