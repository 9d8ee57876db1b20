// Golden tests of the mount lists real containerd 2.1.5 returned (tests/data/fixtures/
// containerd-2.1.5/*.json, every one of them), through the hook. containerd 2.1 mounts each
// EROFS layer on the host itself and hands over host directories (`@SNAPSHOTS@/N/fs`), so the
// test lays the snapshots directory out the same way: N/layer.erofs (mkfs.erofs) loop-mounted
// read-only on N/fs. The result -- or the hook's refusal -- is compared with
// tests/host/golden/hook/containerd-2.1.5/<list>.json (EVMDK_UPDATE_GOLDEN=1 rewrites them).
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "hook_golden.h"
#include "loop_fixtures.h"
#include "real_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using nlohmann::json;

class HookContainerd21Lists : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "losetup");
    snapshots_ = work_ / "snapshots";
    test::make_fixture_snapshots(snapshots_, false);
    // What containerd 2.1's snapshotter does with every committed layer.
    for (int n = 1; n <= test::kTarIndexLayers; ++n) {
      std::string dir = fmt::format("{}/{}", snapshots_, n);
      loops_.push_back(std::make_unique<test::LoopDevice>(dir + "/layer.erofs", false));
      mounts_.push_back(
          std::make_unique<test::ReadOnlyMount>(loops_.back()->device(), dir + "/fs", "erofs"));
    }
  }
  test::TempDir work_;
  std::string snapshots_;
  // Unmounted before the loop devices are detached (reverse order of declaration).
  std::vector<std::unique_ptr<test::LoopDevice>> loops_;
  std::vector<std::unique_ptr<test::ReadOnlyMount>> mounts_;
};

TEST_P(HookContainerd21Lists, GoldenThroughTheHook) {
  const std::string& name = GetParam();
  std::string list = test::read_fixture_list(test::containerd21_list(name), snapshots_);
  json actual = test::hook_golden_of(name, list, work_.path());
  test::expect_hook_golden("containerd-2.1.5/" + name, actual);
}

INSTANTIATE_TEST_SUITE_P(Containerd215, HookContainerd21Lists,
                         ::testing::ValuesIn(test::fixture_list_names(test::fixtures_dir() +
                                                                      "/containerd-2.1.5")),
                         test::fixture_test_name);

}  // namespace
}  // namespace evmdk::host
