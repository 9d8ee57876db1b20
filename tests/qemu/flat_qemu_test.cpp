// Scenario 3: a flat (fsmeta) disk with two device blobs. The 6.1 guest kernel has multi-device
// EROFS but no flat-device mode, so the guest driver must mount it through read-only loop
// slices of the disk passed as device= options; 6.12 (the newer lane) reads the devices from
// the disk at their mapped_blkaddr itself, and no loop device is needed.
#include "flat_fixture.h"
#include "real_fixtures.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class FlatDisk : public ComposedDiskTest {};

// The fixture itself, mounted by hand in the guest with the blobs as separate disks (device=):
// if this fails, the image is wrong, not erofs-vmdk.
TEST_F(FlatDisk, FixtureMountsWithDeviceOptionsOnGuestKernel) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1a7");
  GuestConfig cfg = config("flat-fixture");
  cfg.drives = {{fixture.fsmeta, "raw", true, "evmdk-fsmeta"},
                {fixture.blob1, "raw", true, "evmdk-blob-1"},
                {fixture.blob2, "raw", true, "evmdk-blob-2"}};
  GuestJob job;
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  // Without device=, 6.1 refuses a multi-device image; a kernel with flat-device mode takes
  // it as a flat disk (the devices at their mapped_blkaddr on the fsmeta disk itself: not
  // where this fixture keeps them), so there the mount is accepted and must be undone.
  bool flat_device_mode = kernel_has_native_mount_paths(env_);
  std::string without_device =
      flat_device_mode
          ? "evmdk_check no-device-is-flat-mode sh -c 'mount -t erofs -o ro '\"$meta\"' /mnt/flat && umount /mnt/flat'\n"
          : "evmdk_check no-device-refused sh -c '! mount -t erofs -o ro '\"$meta\"' /mnt/flat 2>/dev/null'\n";
  job.scenario = R"SH(
meta=$(evmdk_wait_serial evmdk-fsmeta); b1=$(evmdk_wait_serial evmdk-blob-1); b2=$(evmdk_wait_serial evmdk-blob-2)
mkdir -p /mnt/flat
)SH" + without_device + R"SH(
evmdk_check mounted mount -t erofs -o ro,device=$b1,device=$b2 "$meta" /mnt/flat
for f in first.bin second.bin hostname; do
  evmdk_check content-$f cmp /mnt/flat/$f /job/expected-$f
done
umount /mnt/flat
)SH";
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, {flat_device_mode ? "no-device-is-flat-mode" : "no-device-refused",
                                      "mounted", "content-first.bin", "content-second.bin",
                                      "content-hostname"});
}

// The real path: compose --mode flat puts fsmeta and both blobs on one VMDK disk; the guest
// driver takes flat-device mode where the kernel has it (6.12), and on 6.1, which has not,
// mounts through loop slices + device=.
TEST_F(FlatDisk, ComposedFlatDiskMountsThroughDeviceSlicesOnGuestKernel) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1a7");
  compose(host::ComposeMode::Flat, {fixture.fsmeta, fixture.blob1, fixture.blob2});
  std::map<std::string, std::string> expected;
  for (const auto& [name, contents] : fixture.files) expected["expected-" + name] = contents;
  auto paths = mount_path_checks(env_, "flat", FlatPath::kNative);
  // 6.1: one read-only loop slice per device blob (the fsmeta may be mounted from the disk
  // itself). With flat-device mode: none at all.
  std::string loops = paths.native ? "evmdk_expect_eq no-loop-slices \"$bound\" 0\n"
                                   : "evmdk_check loop-slices-bound test \"$bound\" -ge 2\n";
  auto outcome = boot(disk_config("flat"), R"SH(
R=/run/containers/flat/rootfs
evmdk_check mount evmdk_guest_mount flat "$R" || exit 1
)SH" + paths.script + R"SH(
for f in first.bin second.bin hostname; do
  evmdk_check content-$f cmp $R/$f /job/expected-$f
done
evmdk_expect_eq one-erofs-mount "$(grep -c ' erofs ' /proc/mounts)" "1"
bound=0
for b in /sys/block/loop*/loop/backing_file; do [ -f "$b" ] && bound=$((bound + 1)); done
)SH" + loops + R"SH(
evmdk_check teardown evmdk_guest_teardown flat "$R"
evmdk_check_clean after-teardown
)SH", expected);
  std::vector<std::string> checks{"mount",          "content-first.bin", "content-second.bin",
                                  "content-hostname", "one-erofs-mount",
                                  paths.native ? "no-loop-slices" : "loop-slices-bound", "teardown"};
  checks.insert(checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));
}

// The real tool's flat layout (issue 14 item 4): erofs-utils 1.8.10's rebuild-mode fsmeta over
// its three layers, composed in flat mode (the same bytes as erofs-utils' own merged.vmdk,
// tests/host/compose_real_fixtures_test.cpp), mounted by the guest: flat-device mode on 6.12,
// three loop slices + device= on 6.1.
TEST_F(FlatDisk, ErofsUtilsRebuildFsmetaMountsOnGuestKernel) {
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose(host::ComposeMode::Flat, test::copy_erofs_utils_flat(path("erofs-utils")));
  std::map<std::string, std::string> expected;
  std::string script = R"SH(
R=/run/containers/eu/rootfs
evmdk_check mount evmdk_guest_mount eu "$R" || exit 1
)SH";
  std::vector<std::string> checks{"mount", "one-erofs-mount", "teardown"};
  auto paths = mount_path_checks(env_, "eu", FlatPath::kNative);
  script += paths.script;
  size_t i = 0;
  for (const auto& [file, contents] : test::erofs_utils_fsmeta_files()) {
    expected[fmt::format("expected-{}", i)] = contents;
    script += fmt::format("evmdk_check content-{0} cmp \"$R/{1}\" /job/expected-{0}\n", i, file);
    checks.push_back(fmt::format("content-{}", i++));
  }
  script += R"SH(
evmdk_expect_eq one-erofs-mount "$(grep -c ' erofs ' /proc/mounts)" "1"
bound=0
for b in /sys/block/loop*/loop/backing_file; do [ -f "$b" ] && bound=$((bound + 1)); done
)SH";
  script += paths.native ? "evmdk_expect_eq device-slices \"$bound\" 0\n"
                         : "evmdk_expect_eq device-slices \"$bound\" 3\n";
  checks.push_back("device-slices");
  script += R"SH(
evmdk_check teardown evmdk_guest_teardown eu "$R"
evmdk_check_clean after-teardown
)SH";
  auto outcome = boot(disk_config("erofs-utils-flat"), script, expected);
  print_mount_paths(env_, outcome, "erofs-utils 1.8.10 fsmeta");
  checks.insert(checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
