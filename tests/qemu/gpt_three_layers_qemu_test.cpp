// Scenario 1: a three-layer GPT disk composed by `erofs-vmdk compose`, attached as one
// read-only VMDK, mounted in the guest by `erofs-vmdk guest mount`. Checks the merged view,
// writes to the rootfs, runs a process chrooted in it inside a cgroup, tears down, checks
// nothing is left; then boots again on the same upper disk and finds the written file.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class GptThreeLayers : public ComposedDiskTest {};

TEST_F(GptThreeLayers, MergedViewWriteCgroupTeardownAndPersistentUpper) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_three_layers(64);
  auto paths = mount_path_checks(env_, "c1", FlatPath::kNone);

  auto outcome = boot(disk_config("boot-1"), R"SH(
R=/run/containers/c1/rootfs
CG=/sys/fs/cgroup/c1
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_mark_ready
)SH" + paths.script + std::string(kThreeLayerViewScript) + R"SH(
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
  auto first_checks = three_layer_view_checks();
  first_checks.insert(first_checks.end(),
                      {"mount", "write", "delete-lower-file", "process-in-cgroup",
                       "process-root-is-rootfs", "teardown", "process-killed", "cgroup-removed"});
  first_checks.insert(first_checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks(first_checks, {"after-teardown"}));
  RecordProperty("rootfs_ready_seconds", std::to_string(outcome.values["rootfs-ready-seconds"]));

  auto outcome2 = boot(disk_config("boot-2"), R"SH(
R=/run/containers/c1/rootfs
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_expect_eq written-file-persisted "$(cat $R/etc/written)" "written in boot 1"
evmdk_check deletion-persisted sh -c "! ls $R/opt/app/tool 2>/dev/null"
evmdk_expect_eq merged-view-intact "$(cat $R/opt/app/version)" "v3"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  EVMDK_EXPECT_GUEST_PASSED(outcome2, expected_checks({"mount", "written-file-persisted",
                                                       "deletion-persisted", "merged-view-intact",
                                                       "teardown"},
                                                      {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
