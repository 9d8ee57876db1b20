// Scenario 4: 128 layers (Kata's limit), then 250 (past it) on one GPT disk. Every layer's own
// file is visible through the overlay, the top layer wins, every lower is its own EROFS mount,
// and teardown leaves nothing.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class ManyLayers : public ComposedDiskTest {
 protected:
  void run_layers(int count) {
    EVMDK_REQUIRE_CLI("guest", "mount");
    std::vector<std::string> layers;  // top first
    for (int i = 0; i < count; ++i) {
      std::string tree = path("trees/" + std::to_string(i));
      test::make_tree(tree, {{"layers/layer-" + std::to_string(i), std::to_string(i) + "\n"},
                             {"shared", "layer " + std::to_string(i) + "\n"}});
      std::string image = path("layer-" + std::to_string(i) + ".erofs");
      test::make_erofs(tree, image, fmt::format("7e570000-0000-4000-8000-{:012d}", i));
      layers.push_back(image);
    }
    compose(host::ComposeMode::Gpt, layers);

    GuestConfig cfg = disk_config(fmt::format("layers-{}", count));
    cfg.timeout = std::chrono::seconds(400);
    auto outcome = boot(cfg, fmt::format("N={}\n", count) + R"SH(
R=/run/containers/many/rootfs
evmdk_check mount evmdk_guest_mount many "$R" || exit 1
evmdk_mark_ready
evmdk_expect_eq every-layer-visible "$(ls $R/layers | wc -l)" "$N"
evmdk_expect_eq bottom-layer-visible "$(cat $R/layers/layer-$((N - 1)))" "$((N - 1))"
evmdk_expect_eq top-wins "$(cat $R/shared)" "layer 0"
evmdk_expect_eq one-erofs-mount-per-layer "$(grep -c ' erofs ' /proc/mounts)" "$N"
evmdk_check write sh -c "echo w > $R/written && test -f $R/written"
evmdk_check teardown evmdk_guest_teardown many "$R"
evmdk_check_clean after-teardown
)SH");
    EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount", "every-layer-visible",
                                                        "bottom-layer-visible", "top-wins",
                                                        "one-erofs-mount-per-layer", "write",
                                                        "teardown"},
                                                       {"after-teardown"}));
    RecordProperty("rootfs_ready_seconds", std::to_string(outcome.values["rootfs-ready-seconds"]));
  }
};

TEST_F(ManyLayers, Mount128Layers) { run_layers(128); }
TEST_F(ManyLayers, Mount250LayersPastKataLimit) { run_layers(250); }

}  // namespace
}  // namespace evmdk::qemu
