// Golden tests of the mount lists real containerd 2.2.4 returned (tests/data/fixtures/
// containerd-2.2.4/lists/*.json, every one of them), run through the hook like the
// hand-written shapes of hook_golden_test.cpp. `@SNAPSHOTS@` becomes a snapshots directory of
// the test's own: the tar-index lists get the real tar-index layers containerd's differ made;
// the block-mode lists (whose layers the fixtures do not keep) get mkfs.erofs layers. The
// result -- or the hook's refusal -- is compared with
// tests/host/golden/hook/containerd-2.2.4/<list>.json (EVMDK_UPDATE_GOLDEN=1 rewrites them).
// containerd 2.1.5's lists need the host's EROFS mounts: hook_real_lists_golden_root_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>

#include "hook_golden.h"
#include "real_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using nlohmann::json;

class HookRealLists : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4"); }
  test::TempDir work_;
};

TEST_P(HookRealLists, GoldenThroughTheHook) {
  const std::string& name = GetParam();
  std::string snapshots = work_ / "snapshots";
  test::make_fixture_snapshots(snapshots, name.rfind("tarindex-", 0) == 0);
  std::string list = test::read_fixture_list(test::containerd22_list(name), snapshots);
  json actual = test::hook_golden_of(name, list, work_.path());
  test::expect_hook_golden("containerd-2.2.4/" + name, actual);
}

INSTANTIATE_TEST_SUITE_P(Containerd224, HookRealLists,
                         ::testing::ValuesIn(test::fixture_list_names(test::fixtures_dir() +
                                                                      "/containerd-2.2.4/lists")),
                         test::fixture_test_name);

}  // namespace
}  // namespace evmdk::host
