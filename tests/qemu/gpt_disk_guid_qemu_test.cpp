// A VMM that sets no virtio-blk serial (Firecracker's case), in QEMU: the three-layer GPT disk
// composed by `erofs-vmdk compose --format raw --disk-id gpt-guid` is attached as a raw
// virtio-blk disk WITHOUT a serial, after a decoy GPT disk (another composed image, also
// without a serial). storage.json names the lowers by `gpt-disk-guid:<GUID>`; the guest's
// `erofs-vmdk guest mount` scans the disks, takes the one whose GPT header has that GUID (not
// the decoy), mounts the merged view, writes to the upper and tears down cleanly.
#include <gmock/gmock.h>

#include "scenario.h"

namespace evmdk::qemu {
namespace {

class GptDiskGuid : public ComposedDiskTest {};

TEST_F(GptDiskGuid, GuestFindsTheSeriallessDiskByItsGptDiskGuid) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto layers = make_three_layers(temp_.path(), env_.busybox);
  auto composed = test::cli({"compose", "--mode", "gpt", "--format", "raw", "--allow-copy",
                             "--disk-id", "gpt-guid", "-o", path("disk"), layers[0], layers[1],
                             layers[2]});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  disk_ = read_composed_disk(path("disk"));
  auto layout = nlohmann::json::parse(test::read_file(path("disk") + "/layout.json"));
  std::string guid = layout.value("disk_guid", "");
  ASSERT_EQ(guid.size(), 36u) << layout.dump(2);
  ASSERT_EQ(disk_.storages.size(), 3u);
  for (const auto& storage : disk_.storages) {
    ASSERT_EQ(storage.at("source"), "gpt-disk-guid:" + guid) << storage.dump();
  }
  // The decoy: the lower two layers alone, another GPT disk with another disk GUID.
  ComposedDisk decoy =
      compose_disk(path("decoy"), host::ComposeMode::Gpt, {layers[1], layers[2]},
                   host::DiskFormat::Raw);
  make_ext4_disk(path("upper.img"), 32, temp_.path());

  GuestConfig config = this->config("gpt-disk-guid");
  config.drives = {Drive{path("decoy") + "/disk.img", "raw", true, ""},  // vda, no serial
                   Drive{path("disk") + "/disk.img", "raw", true, ""},   // vdb, no serial
                   upper_drive(path("upper.img"))};
  auto outcome = boot(config, R"SH(
R=/run/containers/c1/rootfs
evmdk_check no-serials sh -c 'test -z "$(cat /sys/block/vda/serial /sys/block/vdb/serial 2>/dev/null)"'
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_mark_ready
)SH" + std::string(kThreeLayerViewScript) + R"SH(
B=/sys/block/loop*/loop/backing_file
evmdk_check right-disk sh -c "grep -q '^/dev/vdb' /proc/mounts || cat $B 2>/dev/null | grep -q '^/dev/vdb'"
evmdk_check decoy-untouched sh -c "! grep -q '^/dev/vda' /proc/mounts && ! cat $B 2>/dev/null | grep -q '^/dev/vda'"
evmdk_check write sh -c "echo guid > $R/etc/written && sync && test \"\$(cat $R/etc/written)\" = guid"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  auto checks = three_layer_view_checks();
  checks.insert(checks.begin(), "no-serials");
  checks.insert(checks.end(), {"mount", "right-disk", "decoy-untouched", "write", "teardown"});
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
