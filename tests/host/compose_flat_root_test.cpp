// A composed flat disk mounts in the kernel's flat-device mode (6.4+; the host kernel here is
// 6.18): qemu-img converts the VMDK to the bytes QEMU presents, a loop device exposes it, and
// EROFS mounted with no device= option reads the blob from the disk at mapped_blkaddr.
// Fixture: see compose_flat_test.cpp (real mkfs.erofs --blobdev multi-device image).
#include <sys/utsname.h>

#include <gmock/gmock.h>

#include "evmdk/host/compose/compose.h"
#include "layer_fixtures.h"
#include "loop_fixtures.h"

namespace evmdk::host {
namespace {

bool kernel_has_flat_device_mode() {
  struct utsname name {};
  if (::uname(&name) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(name.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 4);
}

void mount_and_compare(const std::string& raw, const test::MultiDeviceFixture& fixture,
                       const std::string& mountpoint) {
  test::LoopDevice loop(raw, false);
  test::ReadOnlyMount mount(loop.device(), mountpoint, "erofs");
  EXPECT_EQ(test::describe_tree(mountpoint), test::describe_tree(fixture.tree));
}

TEST(ComposeFlatRoot, FlatDiskMountsInFlatDeviceMode) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "losetup");
  if (!kernel_has_flat_device_mode()) GTEST_SKIP() << "kernel older than 6.4: no flat-device mode";
  test::TempDir dir;
  auto fixture = test::make_multi_device(dir.path());
  for (uint32_t gap : {0u, 5u}) {
    test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks + gap);
    ComposeOptions options;
    options.mode = ComposeMode::Flat;
    options.layers = {{fixture.fsmeta, {}}, {fixture.blob, {}}};
    options.output_dir = dir / ("out" + std::to_string(gap));
    compose(options);
    std::string raw = dir / ("flat" + std::to_string(gap) + ".raw");
    auto convert = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                              options.output_dir + "/disk.vmdk", raw});
    ASSERT_EQ(convert.exit_code, 0) << convert.err;
    SCOPED_TRACE("gap of " + std::to_string(gap) + " blocks before the blob");
    mount_and_compare(raw, fixture, dir / ("mnt" + std::to_string(gap)));
  }
}

}  // namespace
}  // namespace evmdk::host
