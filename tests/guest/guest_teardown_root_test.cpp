// Teardown on real devices and real cgroups, through the erofs-vmdk command: hostile
// processes, stacked mounts, crash injection mid-mount and mid-teardown, idempotency, and
// refusing to delete anything that is not an empty directory it created.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "evmdk/guest/cgroup.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

class GuestTeardown : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "sgdisk", "losetup", "setfattr");
    LayerSpec top;
    top.files = {{"etc/motd", "top\n"}, {"mnt/", ""}, {"bin/.keep", ""}};
    LayerSpec base_layer;
    base_layer.files = {{"etc/os-release", "NAME=test\n"}, {"var/log/", ""}};
    disk_ = std::make_unique<GptLayerDisk>(temp, std::vector<LayerSpec>{top, base_layer});
    layers_ = std::make_unique<AttachedImage>(disk_->image(), true);
    upper_image_ = make_ext4_image(temp);
    upper_ = std::make_unique<AttachedImage>(upper_image_, false);
    storages_ = storages_file(temp, gpt_storages(layers_->device(), 2, upper_->device()));
  }
  void TearDown() override {
    if (!upper_) return;
    TeardownGuard guard(base(), "c", rootfs());
  }

  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }
  CommandResult mount_cli(const std::string& crash_after = {}) {
    return cli_env(crash_after, {"guest", "mount", "-s", storages_, "-i", "c", "-r", rootfs(), "-b", base()});
  }
  CommandResult teardown_cli(const std::vector<std::string>& cgroups = {}, const std::string& crash_after = {}) {
    std::vector<std::string> args{"guest", "teardown", "-i", "c", "-b", base(), "--kill-timeout-ms", "5000"};
    for (const auto& cgroup : cgroups) args.insert(args.end(), {"--cgroup", cgroup});
    return cli_env(crash_after, args);
  }
  CommandResult cli_env(const std::string& crash_after, const std::vector<std::string>& args) {
    std::vector<std::string> argv{"env", "EVMDK_GUEST_CRASH_AFTER=" + crash_after, cli_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }
  // Nothing mounted, no device-mapper device, nothing created left, no loop device of ours, no
  // journal.
  void expect_clean() {
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/c"));
    EXPECT_FALSE(fs::exists(rootfs()));
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), "c")));
    EXPECT_TRUE(loops_backed_by(layers_->device()).empty())
        << fmt::format("{}", fmt::join(loops_backed_by(layers_->device()), " "));
  }
  std::string read_upper(const std::string& path) {
    AttachedImage again(upper_image_, false);
    std::string check = temp / "check";
    fs::create_directories(check);
    if (::mount(again.device().c_str(), check.c_str(), "ext4", MS_RDONLY, nullptr) != 0) return "<mount failed>";
    std::string contents = fs::exists(check + "/" + path) ? read_file(check + "/" + path) : "<missing>";
    ::umount2(check.c_str(), 0);
    return contents;
  }

  TempDir temp;
  std::unique_ptr<GptLayerDisk> disk_;
  std::unique_ptr<AttachedImage> layers_;
  std::string upper_image_;
  std::unique_ptr<AttachedImage> upper_;
  std::string storages_;
};


class HostileTeardown : public GuestTeardown, public ::testing::WithParamInterface<bool> {};

TEST_P(HostileTeardown, KillsHoldersRemovesCgroupsUnmountsStackedMountsKeepsUpperData) {
  bool v2 = GetParam();
  if (!TestCgroups::available(v2)) GTEST_SKIP() << "cgroup hierarchy not available";
  auto mounted = mount_cli();
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  write_file(rootfs() + "/etc/motd", "container wrote this\n");
  TestCgroups cgroups(v2);
  std::string r = rootfs();
  cgroups.spawn("cd " + r + " && exec sleep 1000");                                   // cwd holder
  cgroups.spawn("trap '' TERM; cd " + r + "/etc; exec 3<" + r + "/etc/motd; while :; do sleep 1; done");
  cgroups.spawn("cd " + r + "/var/log; while :; do sleep 1000 & sleep 0.01; done");    // forker
  // Extra mounts stacked inside the rootfs (and one on top of those).
  ASSERT_EQ(::mount("tmpfs", (r + "/mnt").c_str(), "tmpfs", 0, nullptr), 0);
  fs::create_directories(r + "/mnt/inner");
  ASSERT_EQ(::mount("tmpfs", (r + "/mnt/inner").c_str(), "tmpfs", 0, nullptr), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the forker fork
  ASSERT_GE(guest::cgroup_pids(cgroups.dirs()[0]).size(), 4u);

  auto torn = teardown_cli(cgroups.dirs());
  cgroups.reap();
  EXPECT_EQ(torn.exit_code, 0) << torn.out << torn.err;
  for (const auto& dir : cgroups.dirs()) EXPECT_FALSE(fs::exists(dir)) << dir;
  expect_clean();
  EXPECT_EQ(read_upper("upper/etc/motd"), "container wrote this\n");
  // Idempotent: a second teardown finds nothing to do and succeeds.
  auto again = teardown_cli(cgroups.dirs());
  EXPECT_EQ(again.exit_code, 0) << again.err;
}

INSTANTIATE_TEST_SUITE_P(Cgroups, HostileTeardown, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? std::string("v2_cgroup_kill") : std::string("v1_freezer"); });

TEST_F(GuestTeardown, CrashMidMountThenTeardownLeavesItClean) {
  for (std::string step : {"mount:dirs", "mount:lowers", "mount:upper", "mount:mkdir", "mount:overlay"}) {
    SCOPED_TRACE(step);
    auto crashed = mount_cli(step);
    EXPECT_EQ(crashed.exit_code, 128 + SIGKILL) << crashed.err;
    EXPECT_NE(crashed.err.find("crash injected after step '" + step + "'"), std::string::npos) << crashed.err;
    auto status = cli_env("", {"guest", "status", "-i", "c", "-b", base()});
    EXPECT_EQ(status.exit_code, 0);
    std::string phase = step == "mount:overlay" ? "\"mounted\"" : "\"mounting\"";
    EXPECT_NE(status.out.find(phase), std::string::npos) << status.out;
    auto torn = teardown_cli();
    EXPECT_EQ(torn.exit_code, 0) << torn.out << torn.err;
    expect_clean();
  }
}

TEST_F(GuestTeardown, CrashMidTeardownThenTeardownLeavesItClean) {
  for (std::string step : {"teardown:killed", "teardown:rootfs-unmounted", "teardown:unmounted"}) {
    SCOPED_TRACE(step);
    auto mounted = mount_cli();
    ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
    write_file(rootfs() + "/" + fmt::format("kept-{}", step.substr(9)), "data\n");
    TestCgroups cgroups(true);
    auto crashed = teardown_cli(cgroups.dirs(), step);
    EXPECT_EQ(crashed.exit_code, 128 + SIGKILL) << crashed.err;
    auto torn = teardown_cli();
    EXPECT_EQ(torn.exit_code, 0) << torn.out << torn.err;
    expect_clean();
  }
  EXPECT_EQ(read_upper("upper/kept-killed"), "data\n");
  EXPECT_EQ(read_upper("upper/kept-unmounted"), "data\n");
}

TEST_F(GuestTeardown, NeverDeletesContentsAndNamesWhatItCouldNotClean) {
  auto mounted = mount_cli();
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  // Someone left a file in a directory the driver created: it must survive, and teardown
  // must say so and fail.
  std::string stray = base() + "/c/notes.txt";
  write_file(stray, "not yours\n");
  auto torn = teardown_cli();
  EXPECT_NE(torn.exit_code, 0);
  EXPECT_NE(torn.err.find("directory " + base() + "/c left in place"), std::string::npos) << torn.err;
  EXPECT_EQ(read_file(stray), "not yours\n");
  expect_nothing_left(base(), rootfs());
  EXPECT_TRUE(fs::exists(guest::journal_path(base(), "c")));  // kept: the job is not done
  // Once the file is gone, teardown finishes the job.
  fs::remove(stray);
  auto finished = teardown_cli();
  EXPECT_EQ(finished.exit_code, 0) << finished.err;
  expect_clean();
}

TEST_F(GuestTeardown, HolderOutsideTheCgroupsGetsALazyDetachReportedAsAWarning) {
  auto mounted = mount_cli();
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  write_file(rootfs() + "/etc/motd", "still here\n");
  // Not in any cgroup given to teardown, so nothing kills it: the rootfs stays busy.
  pid_t holder = ::fork();
  if (holder == 0) {
    if (::chdir(rootfs().c_str()) != 0) ::_exit(1);
    ::execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto torn = teardown_cli();
  EXPECT_EQ(torn.exit_code, 0) << torn.out << torn.err;
  EXPECT_NE(torn.err.find("lazily detached"), std::string::npos) << torn.err;
  expect_nothing_left(base(), rootfs());
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  // Once the holder is gone the detached filesystems go, and their autoclear loops with them.
  for (int i = 0; i < 100 && !loops_backed_by(layers_->device()).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(loops_backed_by(layers_->device()).empty());
  std::string upper = "<busy>";
  for (int i = 0; i < 50 && (upper == "<busy>" || upper == "<mount failed>"); ++i) {
    upper = read_upper("upper/etc/motd");
    if (upper == "<mount failed>") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(upper, "still here\n");
}

TEST_F(GuestTeardown, MountRefusesASecondMountOfTheSameContainer) {
  ASSERT_EQ(mount_cli().exit_code, 0);
  auto second = mount_cli();
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("already mounted"), std::string::npos) << second.err;
  EXPECT_EQ(teardown_cli().exit_code, 0);
  expect_clean();
}

}  // namespace
}  // namespace evmdk::test
