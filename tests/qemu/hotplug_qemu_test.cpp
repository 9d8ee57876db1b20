// Hot-plug the way a Kata-style shim does it (docs/runtime-integration.md §5): the guest boots
// with no disks and `erofs-vmdk guest mount --timeout-ms` waits for them; the test sends the
// hook's QMP `blockdev-add` and `device_add` for every disk, unchanged, to the running QEMU;
// the guest mounts, writes, tears down; then each disk is removed by the id the hook gave its
// device (`device_del`, waiting for DEVICE_DELETED) and its node name (`blockdev-del`), with no
// I/O error in the guest, and `hook cleanup` removes the hook's state. Meanwhile another
// process holds a layer file open for writing (qemu-io, with QEMU's own image locks): the
// hook's `force-share` is what lets the lowers attach anyway, and the same disk without it is
// refused. Runs on every QEMU the lanes give it (7.2 and 10).
#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "containerd_mounts.h"
#include "harness/qmp.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HotplugQemu : public QemuTest {};

// Waits until some process holds an OFD lock on `image` (QEMU's image locks are OFD locks
// on bytes 100+ and 200+ of the file): /proc/locks names the file by device and inode.
bool wait_until_locked(const std::string& image) {
  struct stat st {};
  if (::stat(image.c_str(), &st) != 0) return false;
  const std::string inode = fmt::format(":{} ", st.st_ino);
  for (int i = 0; i < 200; ++i) {
    std::istringstream locks(read_text("/proc/locks"));
    for (std::string line; std::getline(locks, line);) {
      if (line.find("OFDLCK") != std::string::npos && line.find(inode) != std::string::npos) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST_F(HotplugQemu, HookDisksHotPluggedWhileGuestMountWaitsThenUnpluggedByTheirIds) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("qemu-io", "qemu-img", "debugfs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  auto layers = make_three_layers(temp_.path(), env_.busybox);  // top first

  const std::string rwlayer = path("snapshots/9/rwlayer.img");
  fs::create_directories(path("snapshots/9"));
  test::write_file(path("mounts.json"),
                   test::containerd_block_mode_list(rwlayer, 67108864, layers).dump(2));
  const std::string state = path("state");
  auto hook = test::cli({"hook", "--id", "c1", "--state-dir", state, "--mounts", path("mounts.json")});
  ASSERT_EQ(hook.exit_code, 0) << hook.out << hook.err;
  json output = json::parse(hook.out);
  ASSERT_EQ(output.at("disks").size(), 2u) << output.dump(2);
  json lowers;
  for (const auto& disk : output.at("disks")) {
    // The device is named: device_del finds it by the disk's serial.
    ASSERT_EQ(disk.at("qemu").at("device_add").value("id", ""), disk.at("serial")) << disk.dump(2);
    if (disk.at("role") != "upper") lowers = disk;
  }
  ASSERT_FALSE(lowers.is_null()) << output.dump(2);

  // Another process has the top layer open read-write, holding QEMU's image locks.
  ChildProcess writer({"qemu-io", "-f", "raw", "-c", "sleep 900000", layers[0]}, path("writer.log"));
  ASSERT_TRUE(wait_until_locked(layers[0]))
      << "qemu-io never locked " << layers[0] << ": " << read_text(path("writer.log"));

  GuestConfig cfg = config("hotplug");
  cfg.qmp_socket = path("qmp.sock");
  cfg.timeout = std::chrono::seconds(480);
  auto paths = mount_path_checks(env_, "c1", FlatPath::kNone);
  auto job = scenario_job(output.at("storages").dump(2), R"SH(
R=/run/containers/c1/rootfs
evmdk_check no-disks-at-boot sh -c '! ls -d /sys/block/vd* 2>/dev/null'
# The host hot-plugs once it sees this line; guest mount waits for the serials meanwhile.
echo EVMDK-HOTPLUG-WAITING
EVMDK_MOUNT_TIMEOUT_MS=240000
# Default parallelism (4 lowers at once): the driver locates every partition of the just
# hot-plugged disk before it mounts any, so no partition-table re-read races with an open.
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
)SH" + paths.script + std::string(kThreeLayerViewScript) + R"SH(
evmdk_check write sh -c "echo 'written after hot-plug' > $R/etc/written && sync"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
echo EVMDK-HOTPLUG-TORN-DOWN
# The host now removes every disk of the hook, then plugs one more disk as its "done" signal
# (the guest must not power off while a device_del is still in flight).
evmdk_check host-done evmdk_wait_serial evmdk-hotplug-done 300
evmdk_check disks-unplugged sh -c '! grep -l "^evh-" /sys/block/*/serial'
evmdk_check no-io-errors sh -c '! dmesg | grep -iE "I/O error|Buffer I/O|blk_update_request|EXT4-fs error|erofs.*(error|corrupt)"'
)SH");

  const std::string done_disk = path("done.img");
  test::write_file(done_disk, std::string(1 << 20, '\0'));  // 1 MiB: no partition probe reads past its end
  GuestRun guest(env_, cfg, job);
  std::optional<QmpClient> qmp;
  bool torn_down = false;
  // A QMP failure throws; the guest is still finished below so its console is in the report.
  try {
    ASSERT_TRUE(guest.wait_for_console("EVMDK-HOTPLUG-WAITING", std::chrono::seconds(240)))
        << "the guest never reached guest mount:\n" << guest.console();
    qmp.emplace(cfg.qmp_socket);
    // Give guest mount time to start waiting: the disks must arrive while it polls.
    std::this_thread::sleep_for(std::chrono::seconds(2));

    // Control: the lowers' disk without force-share cannot attach while the layer is locked.
    json unshared = lowers.at("qemu").at("blockdev-add");
    unshared.erase("force-share");
    unshared["node-name"] = "noshare";
    auto added = qmp->execute("blockdev-add", unshared);
    std::string refusal = added.error;
    if (added.ok) {
      auto plugged = qmp->execute("device_add", {{"driver", "virtio-blk-pci"}, {"drive", "noshare"},
                                                 {"id", "noshare-dev"}, {"serial", "evmdk-noshare"}});
      EXPECT_FALSE(plugged.ok) << "the disk attached without force-share while " << layers[0]
                               << " is locked for writing";
      refusal = plugged.error;
      qmp->execute_ok("blockdev-del", {{"node-name", "noshare"}});
    }
    EXPECT_NE(refusal.find("Failed to get shared \"write\" lock"), std::string::npos)
        << refusal << "\n" << qmp->transcript();

    // The hook's disks, exactly as it printed them.
    for (const auto& disk : output.at("disks")) {
      qmp->execute_ok("blockdev-add", disk.at("qemu").at("blockdev-add"));
      qmp->execute_ok("device_add", disk.at("qemu").at("device_add"));
    }

    torn_down = guest.wait_for_console("EVMDK-HOTPLUG-TORN-DOWN", std::chrono::seconds(300));
    if (torn_down) {
      for (const auto& disk : output.at("disks")) {
        std::string id = disk.at("qemu").at("device_add").at("id");
        qmp->execute_ok("device_del", {{"id", id}});
        auto deleted = qmp->wait_event(
            "DEVICE_DELETED", [&](const json& data) { return data.value("device", "") == id; },
            std::chrono::seconds(180));
        EXPECT_TRUE(deleted) << "no DEVICE_DELETED for " << id << "\n" << qmp->transcript();
        // Only a released node can go; an error here means the device still used it.
        qmp->execute_ok("blockdev-del",
                        {{"node-name", disk.at("qemu").at("blockdev-add").at("node-name")}});
      }
      qmp->execute_ok("blockdev-add", {{"driver", "raw"}, {"node-name", "done"}, {"read-only", true},
                                       {"file", {{"driver", "file"}, {"filename", done_disk}}}});
      qmp->execute_ok("device_add", {{"driver", "virtio-blk-pci"}, {"drive", "done"}, {"id", "done"},
                                     {"serial", "evmdk-hotplug-done"}});
    }
  } catch (const HarnessError& error) {
    ADD_FAILURE() << error.what() << "\nQMP:\n" << (qmp ? qmp->transcript() : "(not connected)");
  }
  auto outcome = guest.finish();
  auto checks = three_layer_view_checks();
  checks.insert(checks.end(), {"no-disks-at-boot", "mount", "write", "teardown", "host-done",
                               "disks-unplugged", "no-io-errors"});
  checks.insert(checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));
  EXPECT_TRUE(torn_down) << "QMP:\n" << (qmp ? qmp->transcript() : "(not connected)");
  writer.kill_and_reap();

  // The guest's write landed in the upper the hook created; the state goes with cleanup.
  auto upper_file = test::run({"debugfs", "-R", "cat /upper/etc/written", rwlayer});
  EXPECT_EQ(upper_file.out, "written after hot-plug\n") << upper_file.err;
  auto cleanup = test::cli({"hook", "cleanup", "--id", "c1", "--state-dir", state});
  EXPECT_EQ(cleanup.exit_code, 0) << cleanup.out << cleanup.err;
  EXPECT_FALSE(fs::exists(state + "/c1"));
}

}  // namespace
}  // namespace evmdk::qemu
