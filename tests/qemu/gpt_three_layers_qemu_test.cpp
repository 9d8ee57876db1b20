// Scenario 1: a three-layer GPT disk composed by `erofs-vmdk compose`, attached as one
// read-only VMDK, mounted in the guest by `erofs-vmdk guest mount`. Checks the merged view,
// writes to the rootfs, runs a process chrooted in it inside a cgroup, tears down, checks
// nothing is left; then boots again on the same upper disk and finds the written file.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class GptThreeLayers : public QemuTest {};

TEST_F(GptThreeLayers, MergedViewWriteCgroupTeardownAndPersistentUpper) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto layers = make_three_layers(temp_.path(), env_.busybox);
  auto disk = compose_disk(path("disk"), host::ComposeMode::Gpt, layers);
  make_ext4_disk(path("upper.img"), 64, temp_.path());

  GuestConfig first = config("boot-1");
  first.extra_qemu_args = disk.qemu_args;
  first.drives = {upper_drive(path("upper.img"))};
  auto job = scenario_job(guest_storage_json(disk), R"SH(
R=/run/containers/c1/rootfs
CG=/sys/fs/cgroup/c1
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_mark_ready
evmdk_expect_eq top-wins "$(cat $R/etc/motd)" "top layer greeting"
evmdk_expect_eq top-wins-over-two "$(cat $R/opt/app/version)" "v3"
evmdk_expect_eq lower-visible "$(cat $R/opt/app/tool)" "middle layer tool"
evmdk_expect_eq base-visible "$(cat $R/etc/os-release)" 'NAME="erofs-vmdk qemu test"'
evmdk_check whiteout-hides sh -c "! ls $R/opt/app/legacy.conf 2>/dev/null"
evmdk_check opaque-hides sh -c "! ls -d $R/usr/share/doc/app 2>/dev/null"
evmdk_expect_eq opaque-keeps-own "$(cat $R/usr/share/doc/top-only)" "top documentation"
evmdk_check lowers-read-only sh -c "grep ' erofs ' /proc/mounts | grep -v ' ro,' && exit 1; grep -c ' erofs ' /proc/mounts | grep -qx 3"
evmdk_check write sh -c "echo 'written in boot 1' > $R/etc/written && sync && test \"\$(cat $R/etc/written)\" = 'written in boot 1'"
evmdk_check delete-lower-file sh -c "rm $R/opt/app/tool && ! ls $R/opt/app/tool 2>/dev/null"
mkdir -p $CG
sh -c "echo \$\$ > $CG/cgroup.procs && exec chroot $R /bin/busybox sleep 1000" &
pid=$!
usleep 300000
evmdk_expect_eq process-in-cgroup "$(grep -c . $CG/cgroup.procs)" "1"
evmdk_expect_eq process-root-is-rootfs "$(readlink /proc/$pid/root)" "$R"
evmdk_check teardown evmdk_guest_teardown c1 "$R" "$CG"
evmdk_check process-killed sh -c "! kill -0 $pid 2>/dev/null"
evmdk_check cgroup-removed sh -c "! test -d $CG"
evmdk_check_clean after-teardown
)SH");
  auto outcome = run_guest(env_, first, job);
  EVMDK_ASSERT_GUEST_PASSED(outcome, {"mount", "top-wins", "top-wins-over-two", "lower-visible",
                                      "base-visible", "whiteout-hides", "opaque-hides",
                                      "opaque-keeps-own", "lowers-read-only", "write",
                                      "delete-lower-file", "process-in-cgroup",
                                      "process-root-is-rootfs", "teardown", "process-killed",
                                      "cgroup-removed", "after-teardown-no-mounts",
                                      "after-teardown-no-loops", "after-teardown-no-cgroups"});
  RecordProperty("rootfs_ready_seconds", std::to_string(outcome.values["rootfs-ready-seconds"]));

  GuestConfig second = config("boot-2");
  second.extra_qemu_args = disk.qemu_args;
  second.drives = {upper_drive(path("upper.img"))};
  auto again = scenario_job(guest_storage_json(disk), R"SH(
R=/run/containers/c1/rootfs
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_expect_eq written-file-persisted "$(cat $R/etc/written)" "written in boot 1"
evmdk_check deletion-persisted sh -c "! ls $R/opt/app/tool 2>/dev/null"
evmdk_expect_eq merged-view-intact "$(cat $R/opt/app/version)" "v3"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  auto outcome2 = run_guest(env_, second, again);
  EVMDK_EXPECT_GUEST_PASSED(outcome2, {"mount", "written-file-persisted", "deletion-persisted",
                                       "merged-view-intact", "teardown", "after-teardown-no-mounts",
                                       "after-teardown-no-loops", "after-teardown-no-cgroups"});
}

}  // namespace
}  // namespace evmdk::qemu
