// The guest's trust boundary on real devices (issue 12): a hostile host's storages or a
// tampered journal never reach outside the container. Each test reproduces one attack that
// got through before: overlay option injection, mount options / fstype / numbers as given, a
// tampered journal, a rootfs parent swapped for a symlink, pre-existing mounts in the rootfs,
// and an oversized device table. Runs in a private mount namespace.
#include <gtest/gtest.h>
#include <grp.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
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

  static std::vector<Storage> with_wrong_erofs_uuid(std::vector<Storage> list, size_t storage) {
    for (auto& option : list[storage].options) {
      if (option.rfind("X-erofs-vmdk.erofs-uuid=", 0) == 0) option = "X-erofs-vmdk.erofs-uuid=" + test_uuid(9, 9);
    }
    return list;
  }
  // mount_rootfs of container "c" fails naming every needle.
  void expect_mount_error(const std::vector<Storage>& list, const std::vector<std::string>& needles) {
    try {
      guest::mount_rootfs(mount_request(list, "c", rootfs(), base()));
      ADD_FAILURE() << "mount was not refused";
    } catch (const Error& error) {
      for (const auto& needle : needles) EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
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

// A tmpfs the test mounts itself (not the driver's), unmounted at the end.
class ForeignMount {
 public:
  explicit ForeignMount(std::string path) : path_(std::move(path)) {
    fs::create_directories(path_);
    if (::mount("foreign", path_.c_str(), "tmpfs", 0, "size=1m") != 0) {
      throw std::runtime_error("cannot mount a tmpfs at " + path_);
    }
  }
  ~ForeignMount() {
    while (::umount2(path_.c_str(), MNT_DETACH) == 0) {
    }
  }
  ForeignMount(const ForeignMount&) = delete;
  ForeignMount& operator=(const ForeignMount&) = delete;
  const std::string& path() const { return path_; }
  uint64_t id() const {
    struct statx st {};
    ::statx(AT_FDCWD, path_.c_str(), 0, STATX_MNT_ID, &st);
    return st.stx_mnt_id;
  }

 private:
  std::string path_;
};

bool loop_bound(const std::string& device) {
  int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  loop_info64 info{};
  bool bound = ::ioctl(fd, LOOP_GET_STATUS64, &info) == 0;
  ::close(fd);
  return bound;
}

std::string joined(const std::vector<std::string>& lines) { return fmt::format("{}", fmt::join(lines, "\n")); }

// 3. A tampered journal naming foreign mounts, a foreign loop device (with its real backing
// identity), a foreign directory and another container's dm name: every entry is refused and
// reported, nothing foreign is touched, and the container's own mounts still go.
TEST_F(GuestTrust, TeardownRefusesTamperedJournalEntries) {
  make_disks();
  TeardownGuard guard(base(), "c", rootfs());
  auto mounted = guest::mount_rootfs(mount_request(storages(), "c", rootfs(), base()));
  ForeignMount foreign1(temp / "foreign/one"), foreign2(temp / "foreign/two"), foreign3(temp / "foreign/three");
  std::string foreign_dir = temp / "foreign-empty-dir";
  fs::create_directories(foreign_dir);
  write_file(temp / "foreign.img", std::string(1 << 20, 'x'));
  AttachedImage foreign_loop(temp / "foreign.img", false, true);
  loop_info64 info{};
  {
    int fd = ::open(foreign_loop.device().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ioctl(fd, LOOP_GET_STATUS64, &info), 0);
    ::close(fd);
  }
  // The journal is root-only.
  struct stat st {};
  ASSERT_EQ(::stat(guest::journal_dir(base()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  std::string path = guest::journal_path(base(), "c");
  auto journal = nlohmann::json::parse(read_file(path));
  for (const auto* foreign : {&foreign1, &foreign2, &foreign3}) {
    journal["mounts"].push_back({{"path", foreign->path()}, {"id", foreign->id()}, {"fstype", "tmpfs"}});
  }
  journal["loops"].push_back({{"device", foreign_loop.device()}, {"backing", temp / "foreign.img"},
                              {"offset", 0}, {"backing_dev", info.lo_device},
                              {"backing_ino", info.lo_inode}, {"diskseq", 0}});
  journal["created_dirs"].push_back(foreign_dir);
  journal["verity_devices"].push_back("evmdk-other-lower-0");
  write_file(path, journal.dump());

  auto report = guest::teardown_rootfs(teardown_request("c", base()));
  EXPECT_FALSE(report.clean());
  std::string problems = joined(report.problems);
  for (const auto* foreign : {&foreign1, &foreign2, &foreign3}) {
    EXPECT_NE(problems.find(foreign->path()), std::string::npos) << problems;
    EXPECT_EQ(mount_points_under(foreign->path()).size(), 1u) << foreign->path();
  }
  EXPECT_NE(problems.find(foreign_dir), std::string::npos) << problems;
  EXPECT_NE(problems.find("evmdk-other-lower-0"), std::string::npos) << problems;
  EXPECT_TRUE(fs::is_directory(foreign_dir));
  // The loop entry passes validation (a real /dev/loopN with an identity) but is not this
  // container's attachment: it stays bound.
  EXPECT_TRUE(loop_bound(foreign_loop.device()));
  // The container's own mounts went all the same.
  EXPECT_TRUE(mount_points_under(rootfs()).empty());
  EXPECT_TRUE(mount_points_under(base()).empty());
  // The refused entries are not kept: a second teardown is clean.
  auto again = guest::teardown_rootfs(teardown_request("c", base()));
  EXPECT_TRUE(again.clean()) << again.to_json().dump(1);
  EXPECT_FALSE(fs::exists(path));
}

// 3. A journal directory others can write is not trusted at all.
TEST_F(GuestTrust, JournalDirectoryMustBeRootOnly) {
  make_disks();
  TeardownGuard guard(base(), "c", rootfs());
  guest::mount_rootfs(mount_request(storages(), "c", rootfs(), base()));
  ::chmod(guest::journal_dir(base()).c_str(), 0777);
  auto report = guest::teardown_rootfs(teardown_request("c", base()));
  EXPECT_NE(joined(report.problems).find("not root-only"), std::string::npos) << report.to_json().dump(1);
  EXPECT_FALSE(mount_points_under(rootfs()).empty());  // nothing acted on
  ::chmod(guest::journal_dir(base()).c_str(), 0700);
  teardown_and_expect_nothing_left("c", base(), rootfs());
}

// 3. One container-id rule: no path escapes, no control characters; and an id that looks like
// a journal name no longer collides with another container's journal.
TEST_F(GuestTrust, ContainerIdsAreOneRuleAndNeverCollideWithJournals) {
  make_disks();
  for (std::string id : std::vector<std::string>{"../outside/pwn", "a\nb", ".hidden", "-rf", std::string(129, 'a'), ""}) {
    SCOPED_TRACE(id);
    EXPECT_THROW(guest::mount_rootfs(mount_request(storages(), id, rootfs(), base())), Error);
    EXPECT_THROW(guest::teardown_rootfs(teardown_request(id, base())), Error);
  }
  EXPECT_FALSE(fs::exists(temp / "outside"));
  EXPECT_FALSE(fs::exists(base()));
  auto tmpfs_upper = gpt_storages(layers_->device(), 2, "");
  TeardownGuard guard_x(base(), "x", rootfs());
  TeardownGuard guard_y(base(), "x.journal.json", temp / "rootfs2");
  guest::mount_rootfs(mount_request(tmpfs_upper, "x", rootfs(), base()));
  guest::mount_rootfs(mount_request(tmpfs_upper, "x.journal.json", temp / "rootfs2", base()));
  EXPECT_EQ(read_file(temp / "rootfs2/etc/motd"), "top\n");
  auto report = guest::teardown_rootfs(teardown_request("x.journal.json", base()));
  EXPECT_TRUE(report.clean()) << report.to_json().dump(1);
  EXPECT_TRUE(mount_points_under(temp / "rootfs2").empty());
  EXPECT_TRUE(mount_points_under(base() + "/x.journal.json").empty());
  EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "top\n");  // x untouched
  teardown_and_expect_nothing_left("x", base(), rootfs());
}

// 4. The rootfs's parent renamed away and replaced by a symlink to another container's rootfs
// parent: teardown unmounts its own overlay where it now is, and leaves the other alone.
TEST_F(GuestTrust, TeardownThroughASwappedParentTouchesOnlyItsOwnMounts) {
  make_disks();
  auto list = gpt_storages(layers_->device(), 2, "");
  std::string p1 = temp / "p1", p2 = temp / "p2", moved = temp / "moved";
  TeardownGuard guard1(base(), "c1", p1 + "/rootfs");
  TeardownGuard guard2(base(), "c2", p2 + "/rootfs");
  guest::mount_rootfs(mount_request(list, "c1", p1 + "/rootfs", base()));
  guest::mount_rootfs(mount_request(list, "c2", p2 + "/rootfs", base()));
  write_file(p2 + "/rootfs/etc/c2-data", "c2\n");
  fs::rename(p1, moved);
  fs::create_directory_symlink(p2, p1);

  auto report = guest::teardown_rootfs(teardown_request("c1", base()));
  // The other container is intact.
  EXPECT_EQ(read_file(p2 + "/rootfs/etc/c2-data"), "c2\n");
  EXPECT_EQ(mount_points_under(p2 + "/rootfs").size(), 1u);
  EXPECT_TRUE(fs::is_directory(p2 + "/rootfs"));
  // Its own overlay went, from where it was moved to; the lowers too.
  EXPECT_TRUE(mount_points_under(moved).empty()) << joined(mount_points_under(moved));
  EXPECT_TRUE(mount_points_under(base() + "/c1").empty());
  // A teardown through the symlink's path is refused, naming it.
  EXPECT_NE(joined(report.problems).find(p1), std::string::npos) << report.to_json().dump(1);

  fs::remove(p1);
  teardown_and_expect_nothing_left("c2", base(), p2);
  fs::remove_all(moved);
}

// 4. A rootfs path through a symlink is refused at mount time (never canonicalized).
TEST_F(GuestTrust, MountRefusesARootfsPathThroughASymlink) {
  make_disks();
  fs::create_directories(temp / "real");
  fs::create_directory_symlink(temp / "real", temp / "link");
  try {
    guest::mount_rootfs(mount_request(gpt_storages(layers_->device(), 2, ""), "c",
                                      temp / "link/rootfs", base()));
    ADD_FAILURE() << "mounted through a symlink";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("symlink"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(fs::is_empty(temp / "real"));
  expect_nothing_left(base(), temp / "real");
}

// 5. A rootfs target that already is, or holds, a mount point is refused; a failing mount
// never takes mounts it did not make.
TEST_F(GuestTrust, PreExistingMountsInTheRootfsAreRefusedAndKept) {
  make_disks();
  ForeignMount outer(rootfs());
  ForeignMount inner(rootfs() + "/sub");
  auto list = with_wrong_erofs_uuid(storages(), 0);
  expect_mount_error(list, {"already holds 2 mount(s)", rootfs()});
  EXPECT_EQ(mount_points_under(rootfs()).size(), 2u);
  EXPECT_FALSE(fs::exists(guest::journal_path(base(), "c")));
  // Only the inner one: the rootfs directory itself is not a mount point but holds one.
  ::umount2(rootfs().c_str(), MNT_DETACH);
  ForeignMount only_inner(rootfs() + "/sub");
  EXPECT_THROW(guest::mount_rootfs(mount_request(list, "c", rootfs(), base())), Error);
  EXPECT_EQ(mount_points_under(rootfs()).size(), 1u);
}

// 5. Rollback after a wrong EROFS UUID (the second lower) undoes what this call journaled,
// by mount id, and leaves nothing.
TEST_F(GuestTrust, RollbackUndoesWhatItRecorded) {
  make_disks();
  expect_mount_error(with_wrong_erofs_uuid(storages(), 1), {"EROFS UUID mismatch", "rolled back"});
  expect_nothing_left(base(), rootfs());
  EXPECT_FALSE(fs::exists(rootfs()));
}

void put_le(std::string& bytes, size_t at, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) bytes[at + static_cast<size_t>(i)] = static_cast<char>(value >> (8 * i));
}

// A synthetic EROFS superblock with a device table: `devices` extra devices; the first has
// `blocks` blocks at `mapped_blkaddr` (48-bit with the wide-address feature), block size 2^bits.
std::string erofs_with_device_table(unsigned devices, unsigned bits, uint64_t blocks, uint64_t mapped_blkaddr) {
  std::string image(1 << 20, '\0');
  put_le(image, 1024, 0xE0F5E1E2u, 4);
  image[1024 + 12] = static_cast<char>(bits);
  put_le(image, 1024 + 36, 1, 4);
  put_le(image, 1024 + 80, 0x8 | 0x80, 4);  // DEVICE_TABLE | 48BIT
  put_le(image, 1024 + 86, devices, 2);
  put_le(image, 1024 + 88, 20, 2);          // slot table at byte 2560
  put_le(image, 2560 + 64, blocks & 0xffffffffu, 4);
  put_le(image, 2560 + 68, mapped_blkaddr & 0xffffffffu, 4);
  put_le(image, 2560 + 72, blocks >> 32, 2);
  put_le(image, 2560 + 74, mapped_blkaddr >> 32, 2);
  return image;
}

// 6. A flat image's device table is bounded, and block addresses times the block size are
// checked: 65,535 declared devices or a 48-bit address that overflows are refused before any
// loop device is attached.
TEST_F(GuestTrust, DeviceTablesAreBoundedAndOffsetsChecked) {
  struct Case {
    std::string name;
    std::string image;
    std::string needle;
  };
  std::vector<Case> cases{
      {"many", erofs_with_device_table(65535, 12, 1, 1), "at most 1024"},
      {"wrap", erofs_with_device_table(1, 16, 1, (uint64_t{1} << 48) - 1), "does not fit in 64 bits"},
      {"beyond", erofs_with_device_table(1, 12, 16, uint64_t{1} << 30), "beyond the end of the disk"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = temp / (c.name + ".img");
    write_file(path, c.image);
    AttachedImage device(path, false, true);
    Storage lower;
    lower.driver = "blk";
    lower.source = device.device();
    lower.fstype = "erofs";
    lower.options = {"ro", "X-kata.overlay-lower"};
    expect_refused({lower}, {c.needle});
    EXPECT_TRUE(loops_backed_by(device.device()).empty()) << joined(loops_backed_by(device.device()));
  }
}

// 7. The guest's own policy, from a file or flags of `erofs-vmdk guest mount`: storages without
// dm-verity under require-verity, an md5 tree, or an upper larger than allowed are refused
// before anything is mounted.
TEST_F(GuestTrust, GuestPolicyRefusesBeforeMounting) {
  make_disks();
  auto mount_cli = [&](const std::vector<Storage>& list, const std::vector<std::string>& extra) {
    std::vector<std::string> argv{cli_path(), "guest", "mount", "-s", storages_file(temp, list), "-i", "p",
                                  "-r", rootfs(), "-b", base()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  };
  auto expect_cli_refused = [&](const CommandResult& result, const std::vector<std::string>& needles) {
    EXPECT_NE(result.exit_code, 0);
    for (const auto& needle : needles) EXPECT_NE(result.err.find(needle), std::string::npos) << result.err;
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(rootfs()));
    EXPECT_FALSE(fs::exists(base() + "/p"));
  };
  expect_cli_refused(mount_cli(storages(), {"--require-verity"}),
                     {"storage #0", "requires dm-verity on every lower"});
  std::string policy = temp / "policy.json";
  write_file(policy, R"({"require_verity": true})");
  expect_cli_refused(mount_cli(storages(), {"--policy", policy}), {"storage #0", "policy " + policy});
  write_file(policy, R"({"max_upper_bytes": 1048576})");
  expect_cli_refused(mount_cli(storages(), {"--policy", policy}), {"upper storage", "more than the 1048576"});
  auto md5 = storages();
  for (auto option : {"X-kata.dmverity-enabled=true", "X-kata.dmverity.algorithm=md5",
                      "X-kata.dmverity.hashoffset=4096"}) {
    md5[0].options.push_back(option);
  }
  md5[0].options.push_back("X-kata.dmverity.roothash=" + std::string(32, 'a'));
  expect_cli_refused(mount_cli(md5, {}), {"storage #0", "'md5' is not allowed"});
  // The default policy still mounts unprotected layers.
  TeardownGuard guard(base(), "p", rootfs());
  auto ok = mount_cli(storages(), {});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  teardown_and_expect_nothing_left("p", base(), rootfs());
}

}  // namespace
}  // namespace evmdk::test
