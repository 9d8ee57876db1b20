// The hook's other rootfs shapes in the 6.1 guest (where the driver has no lowerdir+ and binds
// with open_tree/mount_setattr): three containerd mount lists go through the real
// `erofs-vmdk hook`, every disk it prints is attached with its QEMU arguments, and the guest
// mounts each rootfs from the hook's storages, unchanged:
//   view:  two erofs + overlay with only lowerdir -> read-only overlay, no upper, no tmpfs;
//   bind:  erofs + format/bind {{ mount 0 }} ro,rbind -> read-only bind of the layer;
//   upper: mkfs/ext4 + format/mkdir/bind {{ mount 0 }}/upper -> writable bind of upper/ in the
//          ext4 disk, whose write must be in the image on the host afterwards.
// Teardown must leave nothing.
#include <filesystem>

#include "real_fixtures.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HookShapesQemu : public QemuTest {
 protected:
  // Runs the hook for `id`, adds its disks' QEMU arguments to boot; returns its storages.
  json hook(const std::string& id, const json& list, GuestConfig& boot) {
    test::write_file(path(id + "-mounts.json"), list.dump(2));
    auto result = test::cli({"hook", "--id", id, "--state-dir", path("state"), "--mounts", path(id + "-mounts.json")});
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    json output = json::parse(result.out);
    for (const auto& disk : output.at("disks")) {
      for (const auto& arg : disk.at("qemu").at("drive_args")) boot.extra_qemu_args.push_back(arg);
    }
    return output.at("storages");
  }
};

json erofs_mount(const std::string& image) {
  return {{"type", "erofs"}, {"source", image}, {"options", {"ro", "loop"}}};
}

TEST_F(HookShapesQemu, ReadOnlyViewReadOnlyBindAndUpperBindFromTheHook) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("debugfs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  auto layers = make_three_layers(temp_.path(), env_.busybox);  // top, middle, base
  const std::string rwlayer = path("snapshots/9/rwlayer.img");
  fs::create_directories(path("snapshots/9"));

  GuestConfig boot = config("hook-shapes");
  json view = hook("view",
                   json::array({erofs_mount(layers[0]), erofs_mount(layers[1]),
                                {{"type", "format/overlay"}, {"source", "overlay"},
                                 {"options", {"lowerdir={{ overlay 0 1 }}"}}}}),
                   boot);
  json bind = hook("bind",
                   json::array({erofs_mount(layers[2]),
                                {{"type", "format/bind"}, {"source", "{{ mount 0 }}"}, {"options", {"ro", "rbind"}}}}),
                   boot);
  json upper = hook("upper",
                    json::array({{{"type", "mkfs/ext4"},
                                  {"source", rwlayer},
                                  {"options", {"X-containerd.mkfs.fs=ext4", "X-containerd.mkfs.size=33554432", "rw", "loop"}}},
                                 {{"type", "format/mkdir/bind"},
                                  {"source", "{{ mount 0 }}/upper"},
                                  {"options", {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755", "rbind", "rw"}}}}),
                    boot);
  ASSERT_FALSE(HasFailure());

  auto job = scenario_job(view.dump(2), R"SH(
evmdk_mount_as() {  # ID ROOTFS STORAGES
  erofs-vmdk guest mount --storages "$3" --id "$1" --rootfs "$2" --base "$EVMDK_BASE"
}
evmdk_write_refused() {  # FILE: fails unless the write fails with EROFS
  if (echo x > "$1") 2>/tmp/err; then echo "write to $1 succeeded"; return 1; fi
  cat /tmp/err; grep -q 'Read-only file system' /tmp/err
}
V=/run/containers/view/rootfs
evmdk_check view-mount evmdk_mount_as view "$V" /job/storage.json || exit 1
evmdk_check view-is-read-only-overlay sh -c "grep -E ' $V overlay ro[ ,]' /proc/mounts"
evmdk_expect_eq view-top-wins "$(cat $V/opt/app/version)" "v3"
evmdk_expect_eq view-lower-visible "$(cat $V/opt/app/tool)" "middle layer tool"
evmdk_check view-whiteout-hides sh -c "! test -e $V/opt/app/legacy.conf"
evmdk_check view-no-upper sh -c "! grep -E ' (tmpfs|ext4) ' /proc/mounts | grep -q $EVMDK_BASE/view"
evmdk_check view-write-refused evmdk_write_refused "$V/new"
B=/run/containers/bind/rootfs
evmdk_check bind-mount evmdk_mount_as bind "$B" /job/bind.json || exit 1
evmdk_check bind-is-read-only-erofs sh -c "grep -E ' $B erofs ro[ ,]' /proc/mounts"
evmdk_expect_eq bind-layer-file "$(cat $B/etc/os-release)" 'NAME="erofs-vmdk qemu test"'
evmdk_check bind-runs-a-process chroot "$B" /bin/busybox true
evmdk_check bind-write-refused evmdk_write_refused "$B/new"
U=/run/containers/upper/rootfs
evmdk_check upper-mount evmdk_mount_as upper "$U" /job/upper.json || exit 1
evmdk_check upper-is-ext4-rw sh -c "grep -E ' $U ext4 rw[ ,]' /proc/mounts"
evmdk_check upper-write sh -c "mkdir -p $U/etc && echo 'written by the guest' > $U/etc/written && sync"
evmdk_check view-teardown evmdk_guest_teardown view "$V"
evmdk_check bind-teardown evmdk_guest_teardown bind "$B"
evmdk_check upper-teardown evmdk_guest_teardown upper "$U"
evmdk_check_clean after-teardown
evmdk_check nothing-under-base sh -c "! ls -A $EVMDK_BASE | grep ."
)SH");
  job.files["bind.json"] = bind.dump(2);
  job.files["upper.json"] = upper.dump(2);
  auto outcome = run_guest(env_, boot, job);
  EVMDK_ASSERT_GUEST_PASSED(
      outcome,
      expected_checks({"view-mount", "view-is-read-only-overlay", "view-top-wins", "view-lower-visible",
                       "view-whiteout-hides", "view-no-upper", "view-write-refused", "bind-mount",
                       "bind-is-read-only-erofs", "bind-layer-file", "bind-runs-a-process",
                       "bind-write-refused", "upper-mount", "upper-is-ext4-rw", "upper-write",
                       "view-teardown", "bind-teardown", "upper-teardown", "nothing-under-base"},
                      {"after-teardown"}));

  // On the host: the write is in the ext4 image the hook created, under upper/.
  auto written = test::run({"debugfs", "-R", "cat /upper/etc/written", rwlayer});
  ASSERT_EQ(written.exit_code, 0) << written.err;
  EXPECT_EQ(written.out, "written by the guest\n") << written.err;
  for (const char* id : {"view", "bind", "upper"}) {
    auto cleanup = test::cli({"hook", "cleanup", "--id", id, "--state-dir", path("state")});
    EXPECT_EQ(cleanup.exit_code, 0) << id << ": " << cleanup.out << cleanup.err;
  }
}

// Block mode's read-only view without parents (issue 14 item 2), containerd 2.2.4's own list
// (block-view-noparent.json: mkfs/ext4 with 'ro', format/mkdir/bind {{ mount 0 }}/upper with
// 'ro,rbind'): the upper disk is attached read-only and the guest binds upper/ read-only. Once
// with no image yet (the hook creates it, as for the writable case) and once with an image
// whose upper/ already holds a file.
TEST_F(HookShapesQemu, ReadOnlyViewWithoutParentsFromTheRealList) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.ext4", "debugfs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  const std::string snapshots = path("snapshots");
  const std::string fresh = snapshots + "/10/rwlayer.img";
  const std::string existing = snapshots + "/11/rwlayer.img";
  fs::create_directories(snapshots + "/10");
  fs::create_directories(snapshots + "/11");
  test::make_tree(path("existing-tree"), {{"upper/etc/hostname", "made before the view\n"}});
  auto made = test::run({"mkfs.ext4", "-q", "-d", path("existing-tree"), existing, "64M"});
  ASSERT_EQ(made.exit_code, 0) << made.err;

  std::string list = test::read_fixture_list(test::containerd22_list("block-view-noparent"), snapshots);
  json fresh_list = json::parse(list);
  json existing_list = fresh_list;
  existing_list[0]["source"] = existing;
  GuestConfig boot = config("hook-ro-view");
  json fresh_storages = hook("rov-new", fresh_list, boot);
  json existing_storages = hook("rov-old", existing_list, boot);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(fs::exists(fresh)) << "the hook did not create the upper image";
  for (const auto& id : {"rov-new", "rov-old"}) {
    json output = json::parse(test::read_file(path(std::string("state/") + id + "/hook.json")));
    ASSERT_EQ(output.at("disks").size(), 1u) << output.dump(2);
    EXPECT_EQ(output["disks"][0]["role"], "upper");
    EXPECT_TRUE(output["disks"][0]["read_only"].get<bool>()) << output.dump(2);
    EXPECT_TRUE(output["rootfs"]["read_only"].get<bool>()) << output.dump(2);
  }

  auto job = scenario_job(fresh_storages.dump(2), R"SH(
evmdk_write_refused() {  # FILE: fails unless the write fails with EROFS
  if (echo x > "$1") 2>/tmp/err; then echo "write to $1 succeeded"; return 1; fi
  cat /tmp/err; grep -q 'Read-only file system' /tmp/err
}
N=/run/containers/rov-new/rootfs
evmdk_check new-mount evmdk_guest_mount rov-new "$N" || exit 1
evmdk_expect_eq new-read-only "$(evmdk_mount_field rov-new read_only)" true
evmdk_check new-is-read-only-ext4 sh -c "grep -E ' $N ext4 ro[ ,]' /proc/mounts"
evmdk_check new-upper-read-only sh -c "grep -E ' $EVMDK_BASE/rov-new/multi-layer/upper ext4 ro[ ,]' /proc/mounts"
evmdk_check new-is-empty sh -c "test -z \"\$(ls -A $N)\""
evmdk_check new-write-refused evmdk_write_refused "$N/new"
O=/run/containers/rov-old/rootfs
EVMDK_STORAGES=/job/existing.json
evmdk_check old-mount evmdk_guest_mount rov-old "$O" || exit 1
evmdk_expect_eq old-content "$(cat $O/etc/hostname)" "made before the view"
evmdk_check old-write-refused evmdk_write_refused "$O/etc/hostname"
evmdk_check new-teardown evmdk_guest_teardown rov-new "$N"
evmdk_check old-teardown evmdk_guest_teardown rov-old "$O"
evmdk_check_clean after-teardown
)SH");
  job.files["existing.json"] = existing_storages.dump(2);
  auto outcome = run_guest(env_, boot, job);
  EVMDK_EXPECT_GUEST_PASSED(
      outcome, expected_checks({"new-mount", "new-read-only", "new-is-read-only-ext4",
                                "new-upper-read-only", "new-is-empty", "new-write-refused",
                                "old-mount", "old-content", "old-write-refused", "new-teardown",
                                "old-teardown"},
                               {"after-teardown"}));
  // Nothing was written to either image.
  auto kept = test::run({"debugfs", "-R", "cat /upper/etc/hostname", existing});
  EXPECT_EQ(kept.out, "made before the view\n") << kept.err;
  for (const char* id : {"rov-new", "rov-old"}) {
    auto cleanup = test::cli({"hook", "cleanup", "--id", id, "--state-dir", path("state")});
    EXPECT_EQ(cleanup.exit_code, 0) << id << ": " << cleanup.out << cleanup.err;
  }
  EXPECT_TRUE(fs::exists(fresh)) << "the upper image is containerd's snapshot, not the hook's";
}

}  // namespace
}  // namespace evmdk::qemu
