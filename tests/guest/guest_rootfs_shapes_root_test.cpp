// The rootfs shapes other than the writable overlay, on real devices: a read-only bind of one
// EROFS lower, a read-only overlay of several lowers (no upper, no tmpfs), a writable bind of
// a directory in the ext4 upper, and a virtio-fs storage (refused and rolled back on a host
// without the share; tests/qemu/virtiofs_qemu_test.cpp mounts a real one). Bind sources are
// templates only, resolved beneath the mount's root.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <csignal>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <thread>

#include "evmdk/error.h"
#include "evmdk/guest/driver.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

std::vector<LayerSpec> two_layers() {
  LayerSpec top;
  top.files = {{"etc/motd", "top motd\n"}, {"opt/app/version", "2\n"}};
  top.whiteouts = {"opt/app/legacy.conf"};
  LayerSpec base;
  base.files = {{"etc/motd", "base motd\n"},
                {"etc/os-release", "NAME=test\n"},
                {"opt/app/version", "1\n"},
                {"opt/app/legacy.conf", "legacy\n"}};
  return {top, base};
}

// One EROFS image as its own disk (a "raw" lower, as the hook attaches a single layer).
struct SingleLayer {
  SingleLayer(const TempDir& temp, const std::map<std::string, std::string>& files)
      : image(temp / "single.erofs") {
    make_tree(temp / "single-src", files);
    make_erofs(temp / "single-src", image, GptLayerDisk::erofs_uuid(0));
  }
  std::string image;
};

Storage erofs_storage(const std::string& device, std::vector<std::string> extra = {}) {
  Storage lower;
  lower.driver = "blk";
  lower.source = device;
  lower.fstype = "erofs";
  lower.mount_point = "lower-0";
  lower.options = {"X-kata.multi-layer=true", "ro", "X-kata.overlay-lower",
                   "X-erofs-vmdk.erofs-uuid=" + GptLayerDisk::erofs_uuid(0),
                   "X-erofs-vmdk.layer-index=0"};
  lower.options.insert(lower.options.end(), extra.begin(), extra.end());
  return lower;
}

Storage ext4_upper(const std::string& device, std::vector<std::string> extra = {}) {
  Storage upper;
  upper.driver = "blk";
  upper.source = device;
  upper.fstype = "ext4";
  upper.mount_point = "upper";
  upper.options = {"X-kata.multi-layer=true", "X-kata.overlay-upper"};
  upper.options.insert(upper.options.end(), extra.begin(), extra.end());
  return upper;
}

bool mount_is_read_only(const std::string& path) {
  struct statvfs st {};
  return ::statvfs(path.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY) != 0;
}

// errno of creating a file (0 when it worked).
int create_errno(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

std::string fstype_at(const std::string& mount_point) {
  for (const auto& entry : guest::mounts_under(mount_point)) {
    if (entry.mount_point == mount_point) return entry.fstype;
  }
  return {};
}

// Runs `fn` on the ext4 image mounted read-write at a scratch directory (the test's own view).
template <typename Fn>
void with_ext4(const TempDir& temp, const std::string& image, Fn fn) {
  AttachedImage device(image, false);
  std::string dir = temp / "ext4-view";
  fs::create_directories(dir);
  if (::mount(device.device().c_str(), dir.c_str(), "ext4", 0, nullptr) != 0) {
    throw std::runtime_error("cannot mount " + image + ": " + std::strerror(errno));
  }
  try {
    fn(dir);
  } catch (...) {
    ::umount2(dir.c_str(), 0);
    throw;
  }
  ::umount2(dir.c_str(), 0);
}

class GuestRootfsShapes : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "sgdisk", "losetup", "setfattr");
  }
  TempDir temp;
  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }

  // The mount must be refused (naming every needle) and leave nothing behind.
  void expect_refused(const std::vector<Storage>& storages, const std::vector<std::string>& needles,
                      bool refused_before_mounting) {
    try {
      guest::mount_rootfs(mount_request(storages, "bad", rootfs(), base()));
      ADD_FAILURE() << "mount was not refused";
    } catch (const Error& error) {
      std::string what = error.what();
      for (const auto& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
      EXPECT_EQ(what.find("rolled back") != std::string::npos, !refused_before_mounting) << what;
    }
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/bad"));
    EXPECT_FALSE(fs::exists(rootfs()));
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), "bad")));
  }
};

TEST_F(GuestRootfsShapes, OneLowerIsAReadOnlyBindNotAnOverlay) {
  SingleLayer layer(temp, {{"etc/motd", "the only layer\n"}, {"bin/", ""}});
  AttachedImage device(layer.image, false);
  TeardownGuard guard(base(), "ro1", rootfs());
  auto result = guest::mount_rootfs(mount_request(
      {erofs_storage(device.device(), {"X-erofs-vmdk.rootfs-bind={{ mount 1 }}",
                                       "X-erofs-vmdk.rootfs-readonly=true"})},
      "ro1", rootfs(), base()));
  EXPECT_EQ(result.rootfs_kind, "bind");
  EXPECT_TRUE(result.read_only);
  EXPECT_EQ(result.bind_source, base() + "/ro1/multi-layer/lower-0");
  EXPECT_TRUE(result.upper.empty());
  EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "the only layer\n");
  EXPECT_EQ(fstype_at(rootfs()), "erofs");  // the lower itself, no overlay on top
  EXPECT_TRUE(mount_is_read_only(rootfs()));
  EXPECT_EQ(create_errno(rootfs() + "/etc/new"), EROFS);
  // Exactly the lower and the rootfs: no upper directory, no tmpfs.
  EXPECT_EQ(mount_points_under(base()), std::vector<std::string>{base() + "/ro1/multi-layer/lower-0"});
  EXPECT_FALSE(fs::exists(base() + "/ro1/multi-layer/upper"));
  teardown_and_expect_nothing_left("ro1", base(), rootfs());
  EXPECT_FALSE(fs::exists(base() + "/ro1"));
  EXPECT_FALSE(fs::exists(rootfs()));
  EXPECT_FALSE(fs::exists(guest::journal_path(base(), "ro1")));
}

TEST_F(GuestRootfsShapes, SeveralLowersReadOnlyAreAnOverlayWithoutUpper) {
  GptLayerDisk disk(temp, two_layers());
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 2, "");
  storages[0].options.push_back("X-erofs-vmdk.rootfs-readonly=true");
  TeardownGuard guard(base(), "view", rootfs());
  auto result = guest::mount_rootfs(mount_request(storages, "view", rootfs(), base()));
  EXPECT_EQ(result.rootfs_kind, "read-only overlay");
  EXPECT_TRUE(result.read_only);
  EXPECT_TRUE(result.upper.empty());
  EXPECT_EQ(fstype_at(rootfs()), "overlay");
  EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "top motd\n");        // top wins
  EXPECT_EQ(read_file(rootfs() + "/etc/os-release"), "NAME=test\n");  // base shows through
  EXPECT_FALSE(fs::exists(rootfs() + "/opt/app/legacy.conf"));        // whiteout hides
  EXPECT_TRUE(mount_is_read_only(rootfs()));
  EXPECT_EQ(create_errno(rootfs() + "/etc/new"), EROFS);
  EXPECT_NE(::mkdir((rootfs() + "/newdir").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  auto mounted = mount_points_under(base());
  std::sort(mounted.begin(), mounted.end());  // the lowers mount concurrently
  EXPECT_EQ(mounted, (std::vector<std::string>{base() + "/view/multi-layer/lower-0",
                                               base() + "/view/multi-layer/lower-1"}));
  EXPECT_FALSE(fs::exists(base() + "/view/multi-layer/upper"));
  teardown_and_expect_nothing_left("view", base(), rootfs());
  EXPECT_FALSE(fs::exists(base() + "/view"));
}

// The 6.1 guest kernel has no lowerdir+: the read-only overlay then goes through one mount(2)
// with lowerdir only, made read-only by MS_RDONLY.
TEST_F(GuestRootfsShapes, ReadOnlyOverlayWithoutLowerdirPlusUsesMountData) {
  GptLayerDisk disk(temp, two_layers());
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 2, "");
  storages[1].options.push_back("X-erofs-vmdk.rootfs-readonly=true");  // on any storage
  auto request = mount_request(storages, "view61", rootfs(), base());
  request.try_lowerdir_plus = false;
  TeardownGuard guard(base(), "view61", rootfs());
  auto result = guest::mount_rootfs(request);
  EXPECT_EQ(result.rootfs_kind, "read-only overlay");
  EXPECT_EQ(result.overlay_method, "mount(2) relative paths");
  EXPECT_EQ(read_file(rootfs() + "/opt/app/version"), "2\n");
  EXPECT_TRUE(mount_is_read_only(rootfs()));
  EXPECT_EQ(create_errno(rootfs() + "/new"), EROFS);
  teardown_and_expect_nothing_left("view61", base(), rootfs());
}

TEST_F(GuestRootfsShapes, UpperBindWithoutParentsIsWritableAndLandsInTheExt4Upper) {
  std::string upper_image = make_ext4_image(temp);
  with_ext4(temp, upper_image, [](const std::string& dir) {
    write_file(dir + "/kept-at-the-root", "not the container's\n");
  });
  {
    AttachedImage upper(upper_image, false);
    TeardownGuard guard(base(), "blk", rootfs());
    // As the hook emits block mode without parents (tests/host/golden/hook/block-mode-bind.json).
    auto result = guest::mount_rootfs(mount_request(
        {ext4_upper(upper.device(), {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                     "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})},
        "blk", rootfs(), base()));
    EXPECT_EQ(result.rootfs_kind, "bind");
    EXPECT_FALSE(result.read_only);
    EXPECT_EQ(result.bind_source, base() + "/blk/multi-layer/upper/upper");
    EXPECT_EQ(fstype_at(rootfs()), "ext4");
    EXPECT_FALSE(mount_is_read_only(rootfs()));
    EXPECT_FALSE(fs::exists(rootfs() + "/kept-at-the-root"));  // only upper/ is visible
    fs::create_directories(rootfs() + "/etc");
    write_file(rootfs() + "/etc/written", "by the container\n");
    // Teardown removes what it created, never the upper's contents.
    teardown_and_expect_nothing_left("blk", base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/blk"));
  }
  with_ext4(temp, upper_image, [](const std::string& dir) {
    EXPECT_EQ(read_file(dir + "/upper/etc/written"), "by the container\n");
    EXPECT_EQ(read_file(dir + "/kept-at-the-root"), "not the container's\n");
  });
}

// Teardown order on a bind rootfs: processes of the container (cwd in the rootfs, a file
// held open for writing there) are killed, their cgroups removed, then the bind and the upper
// come off; what they wrote stays in the upper.
TEST_F(GuestRootfsShapes, TeardownOfAnUpperBindKillsTheContainerFirst) {
  if (!TestCgroups::available(true)) GTEST_SKIP() << "cgroup v2 hierarchy not available";
  std::string upper_image = make_ext4_image(temp);
  {
    AttachedImage upper(upper_image, false);
    TestCgroups cgroups(true);
    TeardownGuard guard(base(), "busy", rootfs());
    guest::mount_rootfs(mount_request(
        {ext4_upper(upper.device(), {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                     "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})},
        "busy", rootfs(), base()));
    pid_t holder = cgroups.spawn("cd " + rootfs() + " && echo started > log && trap '' TERM && "
                                 "exec 3>>log && while :; do sleep 1; done");
    for (int i = 0; i < 100 && !fs::exists(rootfs() + "/log"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(fs::exists(rootfs() + "/log"));
    auto request = teardown_request("busy", base());
    request.cgroups = cgroups.dirs();
    auto report = guest::teardown_rootfs(request);
    EXPECT_TRUE(report.clean()) << report.to_json().dump(1);
    EXPECT_TRUE(report.warnings.empty()) << report.to_json().dump(1);  // no lazy detach needed
    ASSERT_FALSE(report.actions.empty());
    EXPECT_EQ(report.actions.front(), "killed every process in the container's cgroups");
    cgroups.reap();
    EXPECT_NE(::kill(holder, 0), 0);
    for (const auto& dir : cgroups.dirs()) EXPECT_FALSE(fs::exists(dir));
    expect_nothing_left(base(), rootfs());
  }
  with_ext4(temp, upper_image, [](const std::string& dir) {
    EXPECT_EQ(read_file(dir + "/upper/log"), "started\n");
  });
}

TEST_F(GuestRootfsShapes, ReadOnlyMarkerMakesEvenAWritableUpperBindReadOnly) {
  std::string upper_image = make_ext4_image(temp);
  AttachedImage upper(upper_image, false);
  TeardownGuard guard(base(), "robind", rootfs());
  auto result = guest::mount_rootfs(mount_request(
      {ext4_upper(upper.device(), {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                   "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper",
                                   "X-erofs-vmdk.rootfs-readonly=true"})},
      "robind", rootfs(), base()));
  EXPECT_TRUE(result.read_only);
  // The ext4 itself is read-write; only the rootfs bind is read-only.
  EXPECT_FALSE(mount_is_read_only(base() + "/robind/multi-layer/upper"));
  EXPECT_TRUE(mount_is_read_only(rootfs()));
  EXPECT_EQ(create_errno(rootfs() + "/new"), EROFS);
  teardown_and_expect_nothing_left("robind", base(), rootfs());
}

// Block mode's read-only view without parents (issue 14 item 2; containerd 2.2.4's
// block-view-noparent list): the upper disk is attached read-only, its ext4 mounted 'ro', and
// the rootfs is a read-only bind of {{ mount 0 }}/upper. The mkdir directive is satisfied by the
// directory the image already holds.
TEST_F(GuestRootfsShapes, ReadOnlyUpperViewIsAReadOnlyBindOfTheReadOnlyExt4) {
  std::string upper_image = make_ext4_image(temp);
  with_ext4(temp, upper_image, [](const std::string& dir) {
    fs::create_directories(dir + "/upper/etc");
    write_file(dir + "/upper/etc/hostname", "made before the view\n");
  });
  std::vector<std::string> view_options{"ro", "X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                        "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper",
                                        "X-erofs-vmdk.rootfs-readonly=true"};
  {
    AttachedImage upper(upper_image, false, /*read_only=*/true);
    TeardownGuard guard(base(), "roview", rootfs());
    auto result =
        guest::mount_rootfs(mount_request({ext4_upper(upper.device(), view_options)}, "roview",
                                          rootfs(), base()));
    EXPECT_EQ(result.rootfs_kind, "bind");
    EXPECT_TRUE(result.read_only);
    EXPECT_EQ(result.bind_source, base() + "/roview/multi-layer/upper/upper");
    EXPECT_TRUE(mount_is_read_only(base() + "/roview/multi-layer/upper"));  // the ext4 itself
    EXPECT_TRUE(mount_is_read_only(rootfs()));
    EXPECT_EQ(fstype_at(rootfs()), "ext4");
    EXPECT_EQ(read_file(rootfs() + "/etc/hostname"), "made before the view\n");
    EXPECT_EQ(create_errno(rootfs() + "/new"), EROFS);
    teardown_and_expect_nothing_left("roview", base(), rootfs());
  }
  with_ext4(temp, upper_image, [](const std::string& dir) {
    EXPECT_FALSE(fs::exists(dir + "/upper/new"));
    EXPECT_EQ(read_file(dir + "/upper/etc/hostname"), "made before the view\n");
  });

  // An image without the directory cannot gain it on a read-only disk: refused naming the
  // directive, and rolled back.
  std::string empty_image = make_ext4_image(temp, "empty-upper.img");
  AttachedImage empty(empty_image, false, true);
  try {
    guest::mount_rootfs(
        mount_request({ext4_upper(empty.device(), view_options)}, "bad", rootfs(), base()));
    ADD_FAILURE() << "mounted a read-only view whose directory is missing";
  } catch (const Error& error) {
    std::string what = error.what();
    for (const char* needle : {"mkdir directive '{{ mount 0 }}/upper:0755'",
                               "does not exist and cannot be created: the mount is read-only",
                               "rolled back"}) {
      EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
  }
  expect_nothing_left(base(), rootfs());
  EXPECT_FALSE(fs::exists(guest::journal_path(base(), "bad")));
}

// The journal covers the new shapes: killed after any mount step (through the CLI), a
// teardown undoes exactly what was done and keeps what the container wrote in the upper.
TEST_F(GuestRootfsShapes, CrashAtEveryStepOfAnUpperBindThenTeardownIsClean) {
  std::string upper_image = make_ext4_image(temp);
  with_ext4(temp, upper_image, [](const std::string& dir) {
    fs::create_directories(dir + "/upper");
    write_file(dir + "/upper/kept", "container data\n");
  });
  AttachedImage upper(upper_image, false);
  std::string storages = storages_file(
      temp, {ext4_upper(upper.device(), {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                         "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})});
  for (std::string step : {"mount:dirs", "mount:lowers", "mount:upper", "mount:mkdir", "mount:rootfs"}) {
    SCOPED_TRACE(step);
    TeardownGuard guard(base(), "crash", rootfs());
    auto mount = run({"env", "EVMDK_GUEST_CRASH_AFTER=" + step, cli_path(), "guest", "mount", "-s",
                      storages, "-i", "crash", "-r", rootfs(), "-b", base()});
    EXPECT_EQ(mount.exit_code, 128 + SIGKILL) << mount.out << mount.err;
    EXPECT_TRUE(fs::exists(guest::journal_path(base(), "crash")));
    if (step == "mount:rootfs") {
      EXPECT_EQ(read_file(rootfs() + "/kept"), "container data\n");
    }
    auto teardown = cli({"guest", "teardown", "-i", "crash", "-b", base()});
    EXPECT_EQ(teardown.exit_code, 0) << teardown.out << teardown.err;
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/crash"));
    EXPECT_FALSE(fs::exists(rootfs()));
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), "crash")));
  }
  with_ext4(temp, upper_image, [](const std::string& dir) {
    EXPECT_EQ(read_file(dir + "/upper/kept"), "container data\n");
  });
}

// Two containers whose rootfs share a parent the first mount created (/run/containers in a
// guest): tearing the first down must be clean and leave the parent to the second.
TEST_F(GuestRootfsShapes, ContainersSharingANewRootfsParentTearDownIndependently) {
  SingleLayer layer(temp, {{"etc/motd", "shared layer\n"}});
  AttachedImage device(layer.image, false, true);
  std::string parent = temp / "containers";
  auto storages = std::vector<Storage>{erofs_storage(
      device.device(), {"X-erofs-vmdk.rootfs-bind={{ mount 1 }}", "X-erofs-vmdk.rootfs-readonly=true"})};
  TeardownGuard guard_a(base(), "a", parent + "/a/rootfs");
  TeardownGuard guard_b(base(), "b", parent + "/b/rootfs");
  guest::mount_rootfs(mount_request(storages, "a", parent + "/a/rootfs", base()));
  guest::mount_rootfs(mount_request(storages, "b", parent + "/b/rootfs", base()));
  auto report = guest::teardown_rootfs(teardown_request("a", base()));
  EXPECT_TRUE(report.clean()) << report.to_json().dump(1);
  EXPECT_FALSE(fs::exists(parent + "/a"));
  EXPECT_EQ(read_file(parent + "/b/rootfs/etc/motd"), "shared layer\n");
  teardown_and_expect_nothing_left("b", base(), parent + "/b/rootfs");
  EXPECT_FALSE(fs::exists(parent + "/b"));
  EXPECT_TRUE(mount_points_under(parent).empty());
}

TEST_F(GuestRootfsShapes, BindFollowsASymlinkInsideTheUpperButNeverOneLeavingIt) {
  std::string outside = temp / "outside";
  fs::create_directories(outside);
  write_file(outside + "/secret", "host data\n");
  std::string upper_image = make_ext4_image(temp);
  with_ext4(temp, upper_image, [&](const std::string& dir) {
    fs::create_directories(dir + "/real");
    write_file(dir + "/real/file", "inside\n");
    fs::create_symlink("real", dir + "/alias");            // stays inside
    fs::create_symlink(outside, dir + "/absolute");        // absolute: leaves the root
    fs::create_symlink("../../../../../../..", dir + "/up");  // relative: leaves the root
  });
  AttachedImage upper(upper_image, false);
  {
    TeardownGuard guard(base(), "alias", rootfs());
    auto result = guest::mount_rootfs(
        mount_request({ext4_upper(upper.device(), {"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/alias"})},
                      "alias", rootfs(), base()));
    EXPECT_EQ(read_file(rootfs() + "/file"), "inside\n");
    teardown_and_expect_nothing_left("alias", base(), rootfs());
  }
  for (std::string spec : {"{{ mount 0 }}/absolute", "{{ mount 0 }}/up/tmp", "{{ mount 0 }}/absolute/."}) {
    SCOPED_TRACE(spec);
    expect_refused({ext4_upper(upper.device(), {"X-erofs-vmdk.rootfs-bind=" + spec})},
                   {"symlink escape refused", spec}, false);
  }
  EXPECT_EQ(read_file(outside + "/secret"), "host data\n");
}

TEST_F(GuestRootfsShapes, BadBindTemplatesAreRefusedNamingThemBeforeAnythingIsMounted) {
  SingleLayer layer(temp, {{"etc/motd", "x\n"}});
  AttachedImage device(layer.image, false);
  std::string upper_image = make_ext4_image(temp);
  AttachedImage upper(upper_image, false);
  struct Case {
    std::string spec;
    bool with_upper;
    std::string why;
  };
  for (const Case& c : std::vector<Case>{
           {"/etc", true, "not a '{{ mount N }}' template"},
           {fs::path(temp.path()).string(), true, "not a '{{ mount N }}' template"},
           {"{{ overlay 1 2 }}", true, "not a '{{ mount N }}' template"},
           {"{{ mount x }}", true, "not a number"},
           {"{{ mount 1", true, "unterminated"},
           {"{{ mount 1 }}/etc", true, "only allowed below the upper"},
           {"{{ mount 0 }}/../outside", true, "'..' is not allowed"},
           {"{{ mount 0 }}upper", true, "expected '/'"},
           {"{{ mount 0 }}/", true, "names the upper's root"},
           {"{{ mount 2 }}", true, "there is no mount 2"},
           {"{{ mount 0 }}/upper", false, "there is no upper storage"},
       }) {
    SCOPED_TRACE(c.spec);
    std::vector<Storage> storages{erofs_storage(device.device(), {"X-erofs-vmdk.rootfs-bind=" + c.spec})};
    if (c.with_upper) storages.push_back(ext4_upper(upper.device()));
    expect_refused(storages, {"X-erofs-vmdk.rootfs-bind", c.spec, c.why}, true);
  }
  // Contradictions between the markers are refused too, naming the option.
  expect_refused({erofs_storage(device.device(), {"X-erofs-vmdk.rootfs-bind={{ mount 1 }}",
                                                  "X-erofs-vmdk.overlay-option=index=off"})},
                 {"X-erofs-vmdk.rootfs-bind", "X-erofs-vmdk.overlay-option=index=off"}, true);
  expect_refused({erofs_storage(device.device(), {"X-erofs-vmdk.rootfs-readonly=yes"})},
                 {"X-erofs-vmdk.rootfs-readonly=yes"}, true);
  expect_refused({erofs_storage(device.device(), {"X-erofs-vmdk.rootfs-readonly=true"}),
                  ext4_upper(upper.device())},
                 {"X-erofs-vmdk.rootfs-readonly=true", "upper"}, true);
  expect_refused({ext4_upper(upper.device())}, {"no lower (erofs) storage"}, true);
}

TEST_F(GuestRootfsShapes, AFailedBindRollsBackAndKeepsTheUpperData) {
  std::string upper_image = make_ext4_image(temp);
  with_ext4(temp, upper_image, [](const std::string& dir) { write_file(dir + "/data", "precious\n"); });
  {
    AttachedImage upper(upper_image, false);
    // No mkdir directive creates upper/, so the bind source is missing after the upper mounted.
    expect_refused({ext4_upper(upper.device(), {"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})},
                   {"{{ mount 0 }}/upper", "No such file or directory"}, false);
  }
  with_ext4(temp, upper_image, [](const std::string& dir) {
    EXPECT_EQ(read_file(dir + "/data"), "precious\n");
  });
}

TEST_F(GuestRootfsShapes, VirtioFsWithoutTheShareIsRefusedNamingTheTagAndRolledBack) {
  Storage share;
  share.driver = "virtio-fs";
  share.source = "evh-no-such-share";
  share.fstype = "virtiofs";
  share.options = {"rw", "rbind"};
  share.mount_point = "rootfs";
  expect_refused({share}, {"virtio-fs storage 'evh-no-such-share'", "virtiofs"}, false);
  // Malformed shares are refused before anything is touched.
  Storage wrong_type = share;
  wrong_type.fstype = "9p";
  expect_refused({wrong_type}, {"evh-no-such-share", "'virtio-fs'", "'9p'"}, true);
  SingleLayer layer(temp, {{"etc/motd", "x\n"}});
  AttachedImage device(layer.image, false);
  expect_refused({share, erofs_storage(device.device())}, {"evh-no-such-share", "only storage"}, true);
  Storage with_mkdir = share;
  with_mkdir.options.push_back("X-containerd.mkdir.path={{ mount 0 }}/upper:0755");
  expect_refused({with_mkdir}, {"evh-no-such-share", "{{ mount 0 }}/upper:0755"}, true);
}

}  // namespace
}  // namespace evmdk::test
