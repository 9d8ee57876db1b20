// containerd's merged-fsmeta shape through the real hook and guest, with dm-verity: one `erofs`
// mount of fsmeta.erofs with `device=` blobs and X-containerd.dmverity, every input formatted
// with `verity format`, `erofs-vmdk hook --verity on`. The hook makes one flat disk; the 6.1
// guest mounts the fsmeta and each blob through its own dm-verity device, binds the layer
// read-only as the rootfs (a single-layer view), reads every file, and teardown then `hook
// cleanup` leave nothing behind.
#include <filesystem>

#include "evmdk/host/verity/verity.h"
#include "flat_fixture.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HookFsmetaVerity : public QemuTest {};

TEST_F(HookFsmetaVerity, FlatDiskFromTheHookMountsEveryDeviceThroughDmVerity) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1b0");
  for (const auto& input : {fixture.fsmeta, fixture.blob1, fixture.blob2}) host::verity_format(input, {});
  json list = json::array({{{"type", "erofs"},
                            {"source", fixture.fsmeta},
                            {"options", {"ro", "loop", "device=" + fixture.blob1, "device=" + fixture.blob2,
                                         "X-containerd.dmverity=" + fixture.fsmeta + ".dmverity"}}}});
  test::write_file(path("mounts.json"), list.dump(2));
  auto hooked = test::cli({"hook", "--id", "fsm", "--state-dir", path("state"), "--verity", "on",
                           "--mounts", path("mounts.json")});
  ASSERT_EQ(hooked.exit_code, 0) << hooked.out << hooked.err;
  json output = json::parse(hooked.out);
  ASSERT_EQ(output.at("disks").size(), 1u) << output.dump(2);
  EXPECT_EQ(output.at("disks")[0].at("role"), "flat");
  EXPECT_EQ(output.at("verity").at("unprotected"), json::array());

  GuestConfig boot = config("hook-fsmeta-verity");
  for (const auto& arg : output.at("disks")[0].at("qemu").at("drive_args")) boot.extra_qemu_args.push_back(arg);
  auto job = scenario_job(output.at("storages").dump(2), R"SH(
R=/run/containers/fsm/rootfs
evmdk_check mount evmdk_guest_mount fsm "$R" || exit 1
for f in first.bin second.bin hostname; do
  evmdk_check content-$f cmp $R/$f /job/expected-$f
done
evmdk_check lower-from-dm sh -c "grep ' erofs ' /proc/mounts | grep -q '^/dev/mapper/evmdk-fsm-lower-0 '"
evmdk_expect_eq three-dm-devices "$(ls /sys/block | grep -c '^dm-')" "3"
if (echo x > "$R/new-file") 2>/tmp/err; then
  evmdk_result rootfs-read-only FAIL "a write to the single-layer view succeeded"
else
  evmdk_check rootfs-read-only grep -q 'Read-only file system' /tmp/err
fi
evmdk_check teardown evmdk_guest_teardown fsm "$R"
evmdk_check_clean after-teardown
)SH");
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  auto outcome = run_guest(env_, boot, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount", "content-first.bin", "content-second.bin",
                                                      "content-hostname", "lower-from-dm",
                                                      "three-dm-devices", "rootfs-read-only", "teardown"},
                                                     {"after-teardown"}));

  auto cleanup = test::cli({"hook", "cleanup", "--id", "fsm", "--state-dir", path("state")});
  EXPECT_EQ(cleanup.exit_code, 0) << cleanup.out << cleanup.err;
  EXPECT_FALSE(fs::exists(path("state/fsm")));
  // The layers themselves are untouched by cleanup.
  EXPECT_TRUE(fs::exists(fixture.fsmeta + ".dmverity"));
}

}  // namespace
}  // namespace evmdk::qemu
