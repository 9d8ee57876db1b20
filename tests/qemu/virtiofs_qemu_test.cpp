// The directory-mode shape with no parents: containerd's `bind` of a snapshot's fs/ goes through
// the real `erofs-vmdk hook`, which describes a host share (shares[]: tag, source) and one
// virtio-fs Storage. The host side exports the directory with QEMU's virtiofsd (an RAII child,
// killed with the test whatever happens) over vhost-user-fs-pci with that tag; the guest mounts
// the rootfs from the hook's storages, unchanged, with `erofs-vmdk guest mount`. A writable
// share must show the host's files and keep the guest's writes on the host; a read-only one
// (`ro, rbind`) must refuse writes; teardown must unmount both and leave nothing.
#include <sys/stat.h>

#include <filesystem>
#include <memory>

#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kVirtiofsd = "/usr/lib/qemu/virtiofsd";

// One virtiofsd exporting `source` on a vhost-user socket; killed (its whole process group) on
// destruction.
class Virtiofsd {
 public:
  Virtiofsd(const std::string& source, const std::string& socket, const std::string& log)
      : socket_(socket),
        process_({kVirtiofsd, "-f", "--socket-path=" + socket, "-o", "source=" + source, "-o",
                  "cache=none", "-o", "sandbox=chroot"},
                 log) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!fs::exists(socket_)) {
      if (process_.poll()) throw HarnessError("virtiofsd exited early: " + read_text(log));
      if (std::chrono::steady_clock::now() > deadline) {
        throw HarnessError("virtiofsd made no socket " + socket_ + " in 20 s: " + read_text(log));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // The QEMU arguments that attach this share under `tag` (chardev id `id`).
  std::vector<std::string> qemu_args(const std::string& id, const std::string& tag) const {
    return {"-chardev", "socket,id=" + id + ",path=" + socket_, "-device",
            "vhost-user-fs-pci,chardev=" + id + ",tag=" + tag};
  }
  // virtiofsd ends by itself when QEMU closes the connection.
  std::optional<int> wait_for_exit(std::chrono::milliseconds limit) { return process_.wait_for(limit); }

 private:
  std::string socket_;
  ChildProcess process_;
};

class VirtiofsQemu : public QemuTest {
 protected:
  // Runs the hook on a `bind` of dir with the given options; returns its output.
  json hook_bind(const std::string& id, const std::string& dir, const std::vector<std::string>& options) {
    json list = json::array({{{"type", "bind"}, {"source", dir}, {"options", options}}});
    test::write_file(path(id + "-mounts.json"), list.dump(2));
    auto hook = test::cli({"hook", "--id", id, "--state-dir", path("state"), "--mounts", path(id + "-mounts.json")});
    EXPECT_EQ(hook.exit_code, 0) << hook.out << hook.err;
    return json::parse(hook.out);
  }
};

TEST_F(VirtiofsQemu, HookShareDrivesTheGuestRootfsOverVirtioFs) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS(kVirtiofsd);
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  // The container's directory snapshots (snapshots/9/fs, writable; 8/fs shared read-only).
  const std::string rw_dir = path("snapshots/9/fs"), ro_dir = path("snapshots/8/fs");
  test::make_tree(rw_dir, {{"etc/motd", "from the host share\n"}, {"bin/", ""}});
  test::make_tree(ro_dir, {{"etc/motd", "read-only share\n"}});

  json rw = hook_bind("c1", rw_dir, {"rbind", "rw"});
  json ro = hook_bind("c2", ro_dir, {"rbind", "ro"});
  ASSERT_TRUE(rw.at("disks").empty()) << rw.dump(2);
  ASSERT_EQ(rw.at("shares").size(), 1u) << rw.dump(2);
  ASSERT_EQ(ro.at("shares").size(), 1u) << ro.dump(2);
  EXPECT_EQ(rw.at("shares")[0].at("source"), rw_dir);
  EXPECT_EQ(ro.at("shares")[0].at("read_only"), true);
  const std::string rw_tag = rw.at("shares")[0].at("tag"), ro_tag = ro.at("shares")[0].at("tag");

  Virtiofsd rw_share(rw.at("shares")[0].at("source"), path("rw.sock"), path("virtiofsd-rw.log"));
  Virtiofsd ro_share(ro.at("shares")[0].at("source"), path("ro.sock"), path("virtiofsd-ro.log"));
  GuestConfig boot = config("virtiofs");
  // vhost-user needs the guest RAM in shared memory.
  boot.extra_qemu_args = {"-object",
                          fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", boot.memory_mib),
                          "-numa", "node,memdev=mem"};
  for (const auto& args : {rw_share.qemu_args("fs0", rw_tag), ro_share.qemu_args("fs1", ro_tag)}) {
    boot.extra_qemu_args.insert(boot.extra_qemu_args.end(), args.begin(), args.end());
  }

  auto job = scenario_job(rw.at("storages").dump(2), fmt::format(R"SH(
R=/run/containers/c1/rootfs
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_check rootfs-is-the-rw-share sh -c "grep -E '^{0} $R virtiofs rw[ ,]' /proc/mounts"
evmdk_expect_eq host-file "$(cat $R/etc/motd)" "from the host share"
evmdk_check write sh -c "echo 'written by the guest' > $R/written-in-guest && sync"
evmdk_check status-mounted sh -c "erofs-vmdk guest status --id c1 --base $EVMDK_BASE | grep -q '\"state\": \"mounted\"'"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
evmdk_check no-share-left sh -c "! grep ' virtiofs ' /proc/mounts && ! test -e $R && ! test -e $EVMDK_BASE/c1"
RO=/run/containers/c2/rootfs
evmdk_check mount-ro erofs-vmdk guest mount --storages /job/storage-ro.json --id c2 --rootfs "$RO" --base "$EVMDK_BASE" || exit 1
evmdk_check rootfs-is-the-ro-share sh -c "grep -E '^{1} $RO virtiofs ro[ ,]' /proc/mounts"
evmdk_expect_eq host-file-ro "$(cat $RO/etc/motd)" "read-only share"
evmdk_check write-refused-erofs sh -c "if (echo x > $RO/refused) 2>/tmp/err; then exit 1; fi; cat /tmp/err; grep -q 'Read-only file system' /tmp/err"
evmdk_check teardown-ro evmdk_guest_teardown c2 "$RO"
evmdk_check no-share-left-ro sh -c "! grep ' virtiofs ' /proc/mounts && ! test -e $RO && ! test -e $EVMDK_BASE/c2"
)SH", rw_tag, ro_tag));
  job.files["storage-ro.json"] = ro.at("storages").dump(2);
  auto outcome = run_guest(env_, boot, job);
  EVMDK_ASSERT_GUEST_PASSED(
      outcome, expected_checks({"mount", "rootfs-is-the-rw-share", "host-file", "write", "status-mounted",
                                "teardown", "no-share-left", "mount-ro", "rootfs-is-the-ro-share",
                                "host-file-ro", "write-refused-erofs", "teardown-ro", "no-share-left-ro"},
                               {"after-teardown"}));

  // On the host: the guest's write is in the shared directory; the read-only one is untouched.
  EXPECT_EQ(test::read_file(rw_dir + "/written-in-guest"), "written by the guest\n");
  EXPECT_FALSE(fs::exists(ro_dir + "/refused"));
  EXPECT_EQ(test::read_file(rw_dir + "/etc/motd"), "from the host share\n");
  // QEMU is gone, so each virtiofsd ends by itself; the destructors kill them otherwise.
  EXPECT_TRUE(rw_share.wait_for_exit(std::chrono::seconds(10)).has_value());
  EXPECT_TRUE(ro_share.wait_for_exit(std::chrono::seconds(10)).has_value());

  auto cleanup = test::cli({"hook", "cleanup", "--id", "c1", "--state-dir", path("state")});
  EXPECT_EQ(cleanup.exit_code, 0) << cleanup.out << cleanup.err;
  EXPECT_TRUE(fs::exists(rw_dir + "/etc/motd")) << "the shared directory is containerd's, not the hook's";
}

}  // namespace
}  // namespace evmdk::qemu
