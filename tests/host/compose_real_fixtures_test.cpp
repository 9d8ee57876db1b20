// compose on what real tools make (tests/data/fixtures): erofs-utils 1.8.10's rebuild-mode
// fsmeta with its three layers (issue 14 item 4) -- `compose --mode flat` must present exactly
// the bytes of erofs-utils' own --vmdk-desc descriptor over the same files.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace evmdk::host
