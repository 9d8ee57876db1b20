// Scenario 6: teardown while the container is busy and resisting: a process whose cwd is in the
// rootfs, one ignoring SIGTERM, one that keeps forking, one writing to a file it holds open, a
// process in a nested cgroup, and a tmpfs stacked inside the rootfs. Teardown must kill them
// all, remove the cgroups, unmount everything, keep what was written in the upper, and a
// second teardown must be a clean no-op.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class TeardownBusy : public ComposedDiskTest {};

TEST_F(TeardownBusy, KillsResistingProcessesUnmountsAllAndKeepsUpperData) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_three_layers();

  auto outcome = boot(disk_config("teardown-busy"), R"SH(
R=/run/containers/busy/rootfs
CG=/sys/fs/cgroup/busy
evmdk_check mount evmdk_guest_mount busy "$R" || exit 1
mkdir -p $CG $CG/nested
sh -c "echo \$\$ > $CG/cgroup.procs; cd $R/opt/app && exec sleep 1000" &
sh -c "echo \$\$ > $CG/cgroup.procs; trap '' TERM INT HUP; while :; do sleep 1; done" &
sh -c "echo \$\$ > $CG/cgroup.procs; while :; do sleep 30 & usleep 20000; done" &
sh -c "echo \$\$ > $CG/cgroup.procs; exec 3>>$R/etc/held; while :; do echo line >&3; usleep 100000; done" &
sh -c "echo \$\$ > $CG/nested/cgroup.procs; exec chroot $R /bin/busybox sleep 1000" &
evmdk_check stacked-mount mount -t tmpfs tmpfs $R/tmp
sleep 1
evmdk_check busy-before sh -c "test \$(cat $CG/cgroup.procs | wc -l) -ge 5 && test -s $R/etc/held"
evmdk_check teardown evmdk_guest_teardown busy "$R" "$CG"
evmdk_check no-container-process sh -c "! test -d $CG || test -z \"\$(cat $CG/cgroup.procs $CG/nested/cgroup.procs 2>/dev/null)\""
evmdk_check no-sleeper-left sh -c "! ps | grep -v grep | grep -q 'sleep 1000'"
evmdk_check cgroups-removed sh -c "! test -d $CG"
evmdk_check_clean after-teardown
evmdk_check second-teardown-clean evmdk_guest_teardown busy "$R"
# The upper's contents must survive teardown (Kata deleted them: issue 13759).
upper=$(evmdk_wait_serial evmdk-upper)
mkdir -p /mnt/upper-check
evmdk_check upper-remounts mount -t ext4 -o ro "$upper" /mnt/upper-check
evmdk_check upper-data-kept sh -c "grep -q line /mnt/upper-check/upper/etc/held"
umount /mnt/upper-check
)SH");
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount", "stacked-mount", "busy-before",
                                                      "teardown", "no-container-process",
                                                      "no-sleeper-left", "cgroups-removed",
                                                      "second-teardown-clean", "upper-remounts",
                                                      "upper-data-kept"},
                                                     {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
