// Harness smoke test: boots the guest kernel with the test initramfs, checks the modules and
// the erofs-vmdk binary work in the guest, mounts an EROFS layer attached as a raw virtio disk
// (found by its serial) and writes to an ext4 upper disk. If this fails, every other QEMU
// scenario would fail for reasons unrelated to erofs-vmdk.
#include "qemu_test_util.h"

namespace evmdk::qemu {
namespace {

class HarnessSmoke : public QemuTest {};

std::vector<std::string> processes_mentioning(const std::string& text) {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_text(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(text) != std::string::npos) found.push_back(pid + ": " + cmdline);
  }
  return found;
}

TEST_F(HarnessSmoke, BootsMountsErofsFromRawDiskAndWritesExt4) {
  test::make_tree(path("tree"), {{"etc/greeting", "hello from erofs\n"}, {"usr/share/empty/", ""}});
  test::make_erofs(path("tree"), path("layer.erofs"));
  make_ext4_disk(path("upper.img"), 32, temp_.path());

  GuestConfig cfg = config("smoke");
  cfg.drives = {{path("layer.erofs"), "raw", true, "evmdk-smoke-layer"},
                {path("upper.img"), "raw", false, "evmdk-smoke-upper"}};
  GuestJob job;
  job.files["expected-greeting"] = "hello from erofs\n";
  // The lane boots the kernel it names (EVMDK_QEMU_KERNEL), not whatever /boot has.
  job.scenario = "evmdk_expect_eq guest-kernel \"$(uname -r)\" '" + env_.kernel_version + "'\n" + R"SH(
evmdk_check modules-loaded sh -c 'grep -qw erofs /proc/filesystems && grep -qw ext4 /proc/filesystems && grep -qw overlay /proc/filesystems'
evmdk_check cli-runs erofs-vmdk --version
layer=$(evmdk_wait_serial evmdk-smoke-layer) && evmdk_result layer-disk-found PASS "$layer"
upper=$(evmdk_wait_serial evmdk-smoke-upper) && evmdk_result upper-disk-found PASS "$upper"
mkdir -p /mnt/layer /mnt/upper
evmdk_check erofs-mounted mount -t erofs -o ro "$layer" /mnt/layer
evmdk_check erofs-content cmp /mnt/layer/etc/greeting /job/expected-greeting
evmdk_check erofs-readonly sh -c '! touch /mnt/layer/new 2>/dev/null'
evmdk_check ext4-mounted mount -t ext4 "$upper" /mnt/upper
evmdk_check ext4-write sh -c 'echo written > /mnt/upper/file && sync && test "$(cat /mnt/upper/file)" = written'
evmdk_check unmounted sh -c 'umount /mnt/layer && umount /mnt/upper'
evmdk_check nothing-left evmdk_leftover_mounts
)SH";
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, {"guest-kernel", "modules-loaded", "cli-runs", "layer-disk-found",
                                      "upper-disk-found", "erofs-mounted", "erofs-content",
                                      "erofs-readonly", "ext4-mounted", "ext4-write", "unmounted",
                                      "nothing-left"});
  RecordProperty("guest_wall_seconds", std::to_string(outcome.wall_seconds));
}

// The harness must report a failing check and a guest that never finishes, not hide them.
TEST_F(HarnessSmoke, ReportsFailedChecksAndTimeouts) {
  GuestConfig cfg = config("failing");
  GuestJob job;
  job.scenario = "evmdk_check must-fail false\nevmdk_result ok PASS fine\n";
  auto outcome = run_guest(env_, cfg, job);
  EXPECT_TRUE(outcome.done) << outcome.report();
  ASSERT_NE(outcome.find("must-fail"), nullptr) << outcome.report();
  EXPECT_FALSE(outcome.find("must-fail")->passed);
  EXPECT_FALSE(outcome.problems({"ok"}).empty());

  GuestConfig hang = config("hanging");
  hang.timeout = std::chrono::seconds(8);
  job.scenario = "sleep 1000\n";
  auto hung = run_guest(env_, hang, job);
  EXPECT_TRUE(hung.timed_out);
  EXPECT_FALSE(hung.done);
  EXPECT_LT(hung.wall_seconds, 20);
  EXPECT_FALSE(hung.problems({}).empty());
  // The killed qemu must be gone: no process still has this test's files on its command line.
  EXPECT_EQ(processes_mentioning(temp_.path()), std::vector<std::string>{});
}

}  // namespace
}  // namespace evmdk::qemu
