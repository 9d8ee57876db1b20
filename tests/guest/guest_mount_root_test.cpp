// The guest driver on real devices: a GPT layer disk on a partition-scanned loop device, an
// ext4 upper, overlay rootfs; identity checks, mkdir directives, 250 lowers.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/guest/driver.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

std::vector<LayerSpec> three_layers() {
  LayerSpec top;
  top.files = {{"etc/motd", "top motd\n"}, {"data/new.txt", "from top\n"}};
  top.whiteouts = {"opt/app/legacy.conf"};
  top.opaque_dirs = {"data"};
  LayerSpec middle;
  middle.files = {{"opt/app/version", "2\n"}, {"opt/app/tool", "tool\n"}};
  LayerSpec base;
  base.files = {{"etc/motd", "base motd\n"},
                {"etc/os-release", "NAME=test\n"},
                {"opt/app/version", "1\n"},
                {"opt/app/legacy.conf", "legacy\n"},
                {"data/old.txt", "hidden by opaque\n"}};
  return {top, middle, base};
}

class GuestMount : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "sgdisk", "losetup", "setfattr");
  }
  TempDir temp;
  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }
};

TEST_F(GuestMount, MergedViewTopWinsWhiteoutsOpaqueAndWritesLandInUpper) {
  GptLayerDisk disk(temp, three_layers());
  AttachedImage layers(disk.image(), true);
  std::string upper_image = make_ext4_image(temp);
  {
    AttachedImage upper(upper_image, false);
    TeardownGuard guard(base(), "c1", rootfs());
    auto result = guest::mount_rootfs(
        mount_request(gpt_storages(layers.device(), 3, upper.device()), "c1", rootfs(), base()));
    ASSERT_EQ(result.lowers.size(), 3u);
    EXPECT_EQ(result.lowers[0], base() + "/c1/multi-layer/lower-0");
    // Where the time went, step by step, in order (the benchmark prints these).
    std::vector<std::string> steps;
    for (const auto& [step, ms] : result.step_ms) {
      steps.push_back(step);
      EXPECT_GE(ms, 0.0) << step;
    }
    EXPECT_EQ(steps, (std::vector<std::string>{"dirs", "lowers", "upper", "mkdir", "rootfs"}));

    EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "top motd\n");          // top wins
    EXPECT_EQ(read_file(rootfs() + "/opt/app/version"), "2\n");          // middle over base
    EXPECT_EQ(read_file(rootfs() + "/etc/os-release"), "NAME=test\n");   // base shows through
    EXPECT_FALSE(fs::exists(rootfs() + "/opt/app/legacy.conf"));         // whiteout hides
    EXPECT_TRUE(fs::exists(rootfs() + "/data/new.txt"));
    EXPECT_FALSE(fs::exists(rootfs() + "/data/old.txt"));                // opaque dir hides
    // lower-0 is the top layer's partition, mounted read-only nodev nosuid.
    EXPECT_EQ(read_file(result.lowers[0] + "/etc/motd"), "top motd\n");
    EXPECT_NE(::mkdir((result.lowers[1] + "/x").c_str(), 0755), 0);
    EXPECT_EQ(errno, EROFS);

    write_file(rootfs() + "/etc/motd", "written by the container\n");
    write_file(rootfs() + "/written.txt", "hello upper\n");
    EXPECT_EQ(read_file(base() + "/c1/multi-layer/upper/upper/written.txt"), "hello upper\n");

    teardown_and_expect_nothing_left("c1", base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/c1"));
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), "c1")));
  }
  // The upper's files survive teardown: mount the ext4 image again and look.
  AttachedImage again(upper_image, false);
  std::string check = temp / "check";
  fs::create_directories(check);
  ASSERT_EQ(::mount(again.device().c_str(), check.c_str(), "ext4", MS_RDONLY, nullptr), 0);
  std::string written = read_file(check + "/upper/written.txt");
  std::string motd = read_file(check + "/upper/etc/motd");
  ::umount2(check.c_str(), 0);
  EXPECT_EQ(written, "hello upper\n");
  EXPECT_EQ(motd, "written by the container\n");
}

TEST_F(GuestMount, MemoryBackedUpperWhenNoUpperStorage) {
  GptLayerDisk disk(temp, three_layers());
  AttachedImage layers(disk.image(), true);
  TeardownGuard guard(base(), "mem", rootfs());
  guest::mount_rootfs(mount_request(gpt_storages(layers.device(), 3, ""), "mem", rootfs(), base()));
  write_file(rootfs() + "/scratch", "x");
  EXPECT_EQ(read_file(base() + "/mem/multi-layer/upper/upper/scratch"), "x");
  teardown_and_expect_nothing_left("mem", base(), rootfs());
}

void expect_refused(const std::vector<Storage>& storages, const std::string& base,
                    const std::string& rootfs, const std::vector<std::string>& needles,
                    bool refused_before_mounting = false) {
  try {
    guest::mount_rootfs(mount_request(storages, "bad", rootfs, base));
    ADD_FAILURE() << "mount was not refused";
  } catch (const Error& error) {
    for (const auto& needle : needles) EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    if (!refused_before_mounting) {
      EXPECT_NE(std::string(error.what()).find("rolled back"), std::string::npos) << error.what();
    }
  }
  // Rolled back: nothing mounted, nothing created left behind, no journal.
  expect_nothing_left(base, rootfs);
  EXPECT_FALSE(std::filesystem::exists(base + "/bad"));
  EXPECT_FALSE(std::filesystem::exists(rootfs));
  EXPECT_FALSE(std::filesystem::exists(guest::journal_path(base, "bad")));
}

TEST_F(GuestMount, WrongPartuuidIsRefusedNamingBothValues) {
  GptLayerDisk disk(temp, three_layers());
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 3, "");
  // Swap what the host "meant": layer 2's storage now expects partition 3 to be layer 1's.
  std::string wrong = GptLayerDisk::part_uuid(1);
  for (auto& option : storages[2].options) {
    if (option.rfind("X-erofs-vmdk.partuuid=", 0) == 0) option = "X-erofs-vmdk.partuuid=" + wrong;
  }
  expect_refused(storages, base(), rootfs(),
                 {"PARTUUID mismatch", wrong, GptLayerDisk::part_uuid(2), "layer 2"});
}

TEST_F(GuestMount, WrongErofsUuidIsRefusedNamingBothValues) {
  GptLayerDisk disk(temp, three_layers());
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 3, "");
  std::string wrong = "deadbeef-0000-4000-8000-000000000001";
  for (auto& option : storages[0].options) {
    if (option.rfind("X-erofs-vmdk.erofs-uuid=", 0) == 0) option = "X-erofs-vmdk.erofs-uuid=" + wrong;
  }
  expect_refused(storages, base(), rootfs(),
                 {"EROFS UUID mismatch", wrong, GptLayerDisk::erofs_uuid(0), "layer 0"});
}

TEST_F(GuestMount, MkdirDirectivesHonourModeOwnerAndEveryMountIndex) {
  LayerSpec top;
  top.files = {{"srv/ready/", ""}};
  LayerSpec base_layer;
  base_layer.files = {{"etc/os-release", "x\n"}};
  GptLayerDisk disk(temp, {top, base_layer});
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 2, "");
  storages[0].options.push_back("X-kata.mkdir.path={{ mount 0 }}/upper/var/lib/app:0750:1234:5678");
  storages[0].options.push_back("X-containerd.mkdir.path={{ mount 1 }}/srv/ready:0755");  // exists
  TeardownGuard guard(base(), "mk", rootfs());
  guest::mount_rootfs(mount_request(storages, "mk", rootfs(), base()));
  struct stat st {};
  ASSERT_EQ(::stat((rootfs() + "/var/lib/app").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  teardown_and_expect_nothing_left("mk", base(), rootfs());
}

TEST_F(GuestMount, MkdirThroughASymlinkOutOfTheMountIsRefused) {
  std::string outside = temp / "outside";
  fs::create_directories(outside);
  // A layer whose /escape is an absolute symlink and /up a relative one leaving the root.
  TempDir other;
  LayerSpec evil;
  evil.files = {{"etc/hostname", "x\n"}};
  std::string evil_src = other / "layer-src";
  build_layer_dir(evil_src, evil);
  fs::create_symlink(outside, evil_src + "/escape");
  fs::create_symlink("../../../../../../..", evil_src + "/up");
  std::string evil_image = other / "evil.erofs";
  make_erofs(evil_src, evil_image, GptLayerDisk::erofs_uuid(0));
  AttachedImage evil_device(evil_image, false);
  for (std::string spec : {"{{ mount 1 }}/escape/x:0755", "{{ mount 1 }}/up/tmp/x:0755"}) {
    Storage lower;
    lower.source = evil_device.device();
    lower.fstype = "erofs";
    lower.options = {"ro", "X-kata.overlay-lower", "X-kata.mkdir.path=" + spec};
    expect_refused({lower}, base(), rootfs(), {"symlink escape refused", spec});
    EXPECT_FALSE(fs::exists(outside + "/x"));
  }
  // '..' is refused outright, before anything is mounted.
  Storage lower;
  lower.source = evil_device.device();
  lower.fstype = "erofs";
  lower.options = {"ro", "X-kata.overlay-lower"};
  Storage overlay;
  overlay.fstype = "overlay";
  overlay.options = {"X-kata.mkdir.path={{ mount 0 }}/../../x:0755"};
  expect_refused({lower, overlay}, base(), rootfs(), {"'..' is not allowed"}, true);
}

TEST_F(GuestMount, TwoHundredFiftyLowersMount) {
  std::vector<LayerSpec> specs(250);
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].files = {{fmt::format("layers/{}", i), fmt::format("{}\n", i)},
                      {"which", fmt::format("layer {}\n", i)}};
  }
  GptLayerDisk disk(temp, specs);
  AttachedImage layers(disk.image(), true);
  TeardownGuard guard(base(), "many", rootfs());
  auto request = mount_request(gpt_storages(layers.device(), specs.size(), ""), "many", rootfs(), base());
  request.device_timeout = std::chrono::milliseconds(20000);
  auto result = guest::mount_rootfs(request);
  EXPECT_EQ(result.lowers.size(), 250u);
  EXPECT_EQ(read_file(rootfs() + "/which"), "layer 0\n");  // the top layer wins
  EXPECT_EQ(read_file(rootfs() + "/layers/249"), "249\n");  // the bottom one is there
  EXPECT_EQ(read_file(rootfs() + "/layers/123"), "123\n");
  teardown_and_expect_nothing_left("many", base(), rootfs());
}

}  // namespace
}  // namespace evmdk::test
