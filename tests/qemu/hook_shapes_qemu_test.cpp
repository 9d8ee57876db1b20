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

}  // namespace
}  // namespace evmdk::qemu
