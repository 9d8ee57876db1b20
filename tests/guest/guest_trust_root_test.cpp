// The guest's trust boundary on real devices (issue 12): a hostile host's storages or a
// tampered journal never reach outside the container. Each test reproduces one attack that
// got through before: overlay option injection, mount options / fstype / numbers as given, a
// tampered journal, a rootfs parent swapped for a symlink, pre-existing mounts in the rootfs,
// and an oversized device table. Runs in a private mount namespace.
#include <gtest/gtest.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/guest/driver.h"
#include "evmdk/guest/journal.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

// Per-mount options (mountinfo field 6) of the mount at `mount_point`, topmost; "" if none.
std::string mount_options_at(const std::string& mount_point) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point, options;
    fields >> id >> parent >> devno >> root >> point >> options;
    if (point == mount_point) found = options;
  }
  return found;
}

bool has_flag(const std::string& options, const std::string& flag) {
  return ("," + options + ",").find("," + flag + ",") != std::string::npos;
}

// Runs `path args...` as uid/gid 65534 and returns its stdout (or "<exit N>").
std::string run_as_nobody(const std::string& path, const std::vector<std::string>& args) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[1], 1);
    ::close(pipe_fds[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(121);
    std::vector<char*> argv{const_cast<char*>(path.c_str())};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string out;
  char buffer[256];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return fmt::format("<exit {}>", status);
  return trim(out);
}

class GuestTrust : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Everything this file mounts stays in its own mount namespace, invisible to the host.
    if (::geteuid() == 0 && ::unshare(CLONE_NEWNS) == 0) {
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
    }
  }
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "sgdisk", "losetup", "setfattr");
    ::chmod(temp.path().c_str(), 0755);  // so the unprivileged probe can reach the rootfs
  }
  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }

  // Two GPT layers (layer 0 holds a setuid-root copy of `id`) and an ext4 upper, attached.
  void make_disks() {
    LayerSpec top;
    top.files = {{"etc/motd", "top\n"}, {"mnt/", ""}};
    LayerSpec bottom;
    bottom.files = {{"etc/os-release", "NAME=test\n"}, {"var/log/", ""}};
    disk_ = std::make_unique<GptLayerDisk>(temp, std::vector<LayerSpec>{top, bottom},
                                           [&](size_t i, const std::string& image) {
                                             if (i == 0) add_setuid_id(image);
                                           });
    layers_ = std::make_unique<AttachedImage>(disk_->image(), true);
    upper_image_ = make_ext4_image(temp);
    upper_ = std::make_unique<AttachedImage>(upper_image_, false);
  }
  // Rebuilds layer 0 with bin/suid-id: /usr/bin/id, owned by root, mode 04755.
  void add_setuid_id(const std::string& image) {
    std::string src = temp / "layer-src-0";
    fs::create_directories(src + "/bin");
    fs::copy_file("/usr/bin/id", src + "/bin/suid-id", fs::copy_options::overwrite_existing);
    ::chown((src + "/bin/suid-id").c_str(), 0, 0);
    ::chmod((src + "/bin/suid-id").c_str(), 04755);
    fs::remove(image);
    make_erofs(src, image, GptLayerDisk::erofs_uuid(0));
  }
  std::vector<Storage> storages() const {
    return gpt_storages(layers_->device(), 2, upper_->device());
  }
  // The mount is refused naming every needle; nothing is left mounted or created.
  void expect_refused(const std::vector<Storage>& list, const std::vector<std::string>& needles,
                      const std::string& id = "bad") {
    try {
      guest::mount_rootfs(mount_request(list, id, rootfs(), base()));
      ADD_FAILURE() << "mount was not refused";
    } catch (const Error& error) {
      std::string what = error.what();
      for (const auto& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/" + id));
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), id)));
  }

  TempDir temp;
  std::unique_ptr<GptLayerDisk> disk_;
  std::unique_ptr<AttachedImage> layers_;
  std::string upper_image_;
  std::unique_ptr<AttachedImage> upper_;
};

// 1. Overlay options that name a path (or anything unknown) never reach the overlay.
TEST_F(GuestTrust, OverlayOptionInjectionIsRefused) {
  make_disks();
  std::string secret_dir = temp / "guest-secret";
  fs::create_directories(secret_dir);
  write_file(secret_dir + "/secret", "guest only\n");
  for (std::string injected :
       {"lowerdir+=" + secret_dir, "lowerdir=" + secret_dir, "upperdir=" + secret_dir,
        "workdir=" + secret_dir, "datadir+=" + secret_dir, "index=off,lowerdir=" + secret_dir,
        std::string("no_such_overlay_option=1")}) {
    SCOPED_TRACE(injected);
    auto list = storages();
    list[0].options.push_back("X-erofs-vmdk.overlay-option=" + injected);
    expect_refused(list, {"storage #0", "X-erofs-vmdk.overlay-option=" + injected});
    EXPECT_FALSE(fs::exists(rootfs() + "/secret"));
  }
  // Allowed options still pass.
  auto list = storages();
  list[0].options.push_back("X-erofs-vmdk.overlay-option=index=off");
  list[0].options.push_back("X-erofs-vmdk.overlay-option=redirect_dir=off");
  TeardownGuard guard(base(), "ok", rootfs());
  guest::mount_rootfs(mount_request(list, "ok", rootfs(), base()));
  EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "top\n");
  teardown_and_expect_nothing_left("ok", base(), rootfs());
}

// 2. The role fixes the filesystem type; only allowlisted options pass; numbers never wrap.
TEST_F(GuestTrust, MountOptionsFstypeAndNumbersAreCheckedPerRole) {
  make_disks();
  {
    auto list = storages();
    list[2].fstype = "tmpfs";
    list[2].options.push_back("size=1m");
    expect_refused(list, {"storage #2", "must be ext4, not 'tmpfs'"});
  }
  for (std::string option : {"dev", "suid", "exec", "mode=0777", "journal_path=/dev/sda"}) {
    SCOPED_TRACE(option);
    auto list = storages();
    list[2].options.push_back(option);
    expect_refused(list, {"storage #2", "'" + option + "'"});
  }
  for (std::string option : std::vector<std::string>{"device=" + upper_->device(), "rw", "suid", "dev", "fsid=x"}) {
    SCOPED_TRACE(option);
    auto list = storages();
    list[1].options.push_back(option);
    expect_refused(list, {"storage #1", "'" + option + "'"});
  }
  {
    auto list = storages();
    for (auto& option : list[0].options) {
      if (option.rfind("X-erofs-vmdk.layer-index=", 0) == 0) option = "X-erofs-vmdk.layer-index=4294967296";
    }
    expect_refused(list, {"storage #0", "X-erofs-vmdk.layer-index", "4294967296"});
  }
  {
    auto list = storages();
    list[1].options.push_back("X-kata.partition-number=4294967298");
    expect_refused(list, {"storage #1", "X-kata.partition-number"});
  }
}

// 2. Layer mounts are nodev,nosuid (lowers also ro) whatever the storages say; the container
// sees them only through the overlay, whose own flags decide: setuid still works in it.
TEST_F(GuestTrust, LayerMountsAreNodevNosuidButSetuidWorksThroughTheOverlay) {
  make_disks();
  TeardownGuard guard(base(), "suid", rootfs());
  auto result = guest::mount_rootfs(mount_request(storages(), "suid", rootfs(), base()));
  for (const auto& lower : result.lowers) {
    std::string options = mount_options_at(lower);
    EXPECT_TRUE(has_flag(options, "ro") && has_flag(options, "nodev") && has_flag(options, "nosuid"))
        << lower << ": " << options;
  }
  std::string upper_options = mount_options_at(result.upper);
  EXPECT_TRUE(has_flag(upper_options, "nodev") && has_flag(upper_options, "nosuid"))
      << result.upper << ": " << upper_options;
  std::string rootfs_options = mount_options_at(rootfs());
  EXPECT_FALSE(has_flag(rootfs_options, "nosuid")) << rootfs_options;
  // The lower's own mount (in a 0700 directory) has nosuid; the overlay honours the bit.
  EXPECT_EQ(run_as_nobody(rootfs() + "/bin/suid-id", {"-u"}), "0");
  teardown_and_expect_nothing_left("suid", base(), rootfs());
}

}  // namespace
}  // namespace evmdk::test
