// The three-layer GPT disk composed with --format raw: QEMU attaches disk.img with format=raw
// (qemu.json's drive arguments, read-only, with the serial), and the guest mounts the rootfs
// from it exactly as from the VMDK: the merged view, a write to the upper, a clean teardown.
#include <gmock/gmock.h>

#include "scenario.h"

namespace evmdk::qemu {
namespace {

class RawImageDisk : public ComposedDiskTest {};

TEST_F(RawImageDisk, GuestMountsTheRootfsFromTheRawImage) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose(host::ComposeMode::Gpt, make_three_layers(temp_.path(), env_.busybox), 32,
          host::DiskFormat::Raw);
  ASSERT_EQ(disk_.qemu_args.size(), 4u);
  EXPECT_THAT(disk_.qemu_args[1], ::testing::AllOf(::testing::HasSubstr("/disk.img,format=raw"),
                                                   ::testing::HasSubstr("readonly=on")));
  EXPECT_FALSE(std::filesystem::exists(path("disk") + "/disk.vmdk"));

  auto outcome = boot(disk_config("raw-image"),
                      R"SH(
R=/run/containers/c1/rootfs
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_mark_ready
)SH" + std::string(kThreeLayerViewScript) +
                          R"SH(
evmdk_check serial-of-raw-disk grep -qx ")SH" +
                          disk_.serial + R"SH(" /sys/block/vda/serial /sys/block/vdb/serial
evmdk_check write sh -c "echo raw > $R/etc/written && sync && test \"\$(cat $R/etc/written)\" = raw"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  auto checks = three_layer_view_checks();
  checks.insert(checks.end(), {"mount", "serial-of-raw-disk", "write", "teardown"});
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
