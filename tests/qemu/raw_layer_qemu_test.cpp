// Scenario 2: a single layer composed in raw mode (the layer file itself is the disk), mounted
// with an ext4 upper as the overlay rootfs, written to, and torn down.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class RawLayer : public ComposedDiskTest {};

TEST_F(RawLayer, SingleRawLayerMountsWritesAndTearsDown) {
  EVMDK_REQUIRE_CLI("guest", "mount");
  test::make_tree(path("tree"), {{"etc/motd", "the only layer\n"}, {"srv/data/file", "payload\n"}});
  test::make_erofs(path("tree"), path("only.erofs"), "5a5a5a5a-0000-4000-8000-000000000001");
  compose(host::ComposeMode::Raw, {path("only.erofs")});

  auto outcome = boot(disk_config("raw"), R"SH(
R=/run/containers/raw/rootfs
evmdk_check mount evmdk_guest_mount raw "$R" || exit 1
evmdk_expect_eq layer-content "$(cat $R/etc/motd)" "the only layer"
evmdk_expect_eq nested-content "$(cat $R/srv/data/file)" "payload"
evmdk_expect_eq one-erofs-lower "$(grep -c ' erofs ' /proc/mounts)" "1"
evmdk_check write sh -c "echo new > $R/srv/data/new && test \"\$(cat $R/srv/data/new)\" = new"
evmdk_check teardown evmdk_guest_teardown raw "$R"
evmdk_check_clean after-teardown
)SH");
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount", "layer-content", "nested-content",
                                                      "one-erofs-lower", "write", "teardown"},
                                                     {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
