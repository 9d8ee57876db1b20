// Host and guest agree: containerd mount lists of every shape whose rootfs is not a writable
// overlay go through the real hook (host::run_hook); its disks are attached as a VM would
// (vmdk converted to raw by qemu-img, read-only disks on read-only loop devices), its
// storage.json is fed unchanged except for the disk sources to `erofs-vmdk guest mount`, and the
// rootfs must be what docs/runtime-integration.md section 3 promises; `guest teardown` must
// leave nothing. (The virtio-fs shape needs a VM: tests/qemu/virtiofs_qemu_test.cpp.)
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <filesystem>
#include <memory>

#include "evmdk/host/hook/hook.h"
#include "guest_fixture.h"
#include "real_fixtures.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json erofs_mount(const std::string& image) {
  return {{"type", "erofs"}, {"source", image}, {"options", {"ro", "loop"}}};
}

class GuestHookShapes : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "qemu-img", "losetup");
    // Bottom (1) to top (3), as the snapshotter lays them out.
    layer(1, "11111111-1111-4111-8111-111111111111", {{"etc/os-release", "base\n"}, {"opt/app/version", "1\n"}});
    layer(2, "22222222-2222-4222-8222-222222222222", {{"opt/app/version", "2\n"}, {"opt/app/tool", "tool\n"}});
    layer(3, "33333333-3333-4333-8333-333333333333", {{"opt/app/version", "3\n"}, {"etc/motd", "top\n"}});
    fs::create_directories(work / "snapshots/9");
  }

  void layer(int n, const std::string& uuid, const std::map<std::string, std::string>& files) {
    std::string dir = work / fmt::format("snapshots/{}", n);
    make_tree(dir + "/tree", files);
    make_erofs(dir + "/tree", dir + "/layer.erofs", uuid);
  }
  std::string layer_path(int n) const { return work / fmt::format("snapshots/{}/layer.erofs", n); }
  std::string rwlayer() const { return work / "snapshots/9/rwlayer.img"; }
  std::string rootfs() const { return work / "rootfs"; }
  std::string base() const { return work / "guest-base"; }

  // Runs the hook, attaches its disks, and mounts the guest from its storage.json with the CLI.
  // Returns the `guest mount` summary (null when it failed; the failure is recorded).
  json hook_then_guest_mount(const std::string& id, const json& list) {
    json output = host::run_hook({id, work / "state", host::parse_mount_list(list)});
    std::map<std::string, std::string> device_of_serial;
    for (const auto& disk : output.at("disks")) {
      std::string path = disk.at("path");
      if (disk.at("format") == "vmdk") {
        std::string raw = work / (disk.at("serial").get<std::string>() + ".raw");
        auto convert = run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, raw});
        EXPECT_EQ(convert.exit_code, 0) << convert.err;
        path = raw;
      }
      bool read_only = disk.at("read_only").get<bool>();
      attached.push_back(std::make_unique<AttachedImage>(path, read_only, read_only));
      device_of_serial[disk.at("serial")] = attached.back()->device();
    }
    json storages = json::parse(read_file(output.at("dir").get<std::string>() + "/storage.json"));
    for (auto& storage : storages) {
      std::string source = storage.at("source");
      if (source.rfind("serial:", 0) != 0) continue;
      std::string serial = source.substr(7);
      EXPECT_TRUE(device_of_serial.count(serial)) << storage.dump();
      storage["source"] = device_of_serial[serial];
    }
    write_file(work / (id + "-storage.json"), storages.dump(1));
    guard = std::make_unique<TeardownGuard>(base(), id, rootfs());
    auto mount = cli({"guest", "mount", "-s", work / (id + "-storage.json"), "-i", id, "-r", rootfs(), "-b", base()});
    EXPECT_EQ(mount.exit_code, 0) << mount.out << mount.err;
    if (mount.exit_code != 0) return nullptr;
    return json::parse(mount.out);
  }

  void teardown_with_cli(const std::string& id) {
    auto status = cli({"guest", "status", "-i", id, "-b", base()});
    EXPECT_EQ(status.exit_code, 0) << status.err;
    EXPECT_EQ(json::parse(status.out).at("state"), "mounted") << status.out;
    auto teardown = cli({"guest", "teardown", "-i", id, "-b", base()});
    EXPECT_EQ(teardown.exit_code, 0) << teardown.out << teardown.err;
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(base() + "/" + id));
    EXPECT_FALSE(fs::exists(rootfs()));
    guard.reset();
  }

  static bool read_only_mount(const std::string& path) {
    struct statvfs st {};
    return ::statvfs(path.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY) != 0;
  }

  void expect_read_only_rootfs() {
    EXPECT_TRUE(read_only_mount(rootfs()));
    int fd = ::open((rootfs() + "/created").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_LT(fd, 0);
    EXPECT_EQ(errno, EROFS);
    if (fd >= 0) ::close(fd);
  }

  TempDir work;
  std::vector<std::unique_ptr<AttachedImage>> attached;  // released after the guard
  std::unique_ptr<TeardownGuard> guard;
};

TEST_F(GuestHookShapes, SingleCommittedLayerIsAReadOnlyBindOfIt) {
  json mounted = hook_then_guest_mount("single", json::array({erofs_mount(layer_path(1))}));
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "bind");
  EXPECT_EQ(mounted.at("read_only"), true);
  EXPECT_EQ(mounted.at("bind_source"), base() + "/single/multi-layer/lower-0");
  EXPECT_EQ(read_file(rootfs() + "/etc/os-release"), "base\n");
  expect_read_only_rootfs();
  teardown_with_cli("single");
}

TEST_F(GuestHookShapes, FormatBindReadOnlyOfOneLower) {
  json list = json::array({erofs_mount(layer_path(2)),
                           {{"type", "format/bind"}, {"source", "{{ mount 0 }}"}, {"options", {"ro", "rbind"}}}});
  json mounted = hook_then_guest_mount("fmt-bind", list);
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "bind");
  EXPECT_EQ(mounted.at("read_only"), true);
  EXPECT_EQ(read_file(rootfs() + "/opt/app/tool"), "tool\n");
  expect_read_only_rootfs();
  teardown_with_cli("fmt-bind");
}

TEST_F(GuestHookShapes, ViewOfSeveralParentsIsAReadOnlyOverlay) {
  json list = json::array({erofs_mount(layer_path(3)), erofs_mount(layer_path(2)),
                           {{"type", "format/overlay"}, {"source", "overlay"},
                            {"options", {"lowerdir={{ overlay 0 1 }}"}}}});
  json mounted = hook_then_guest_mount("view", list);
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "read-only overlay");
  EXPECT_EQ(mounted.at("upper"), "");
  EXPECT_EQ(read_file(rootfs() + "/opt/app/version"), "3\n");  // the top layer wins
  EXPECT_EQ(read_file(rootfs() + "/opt/app/tool"), "tool\n");  // the lower one shows through
  EXPECT_FALSE(fs::exists(rootfs() + "/etc/os-release"));      // layer 1 is not in the view
  expect_read_only_rootfs();
  auto lowers_only = mount_points_under(base());
  EXPECT_EQ(lowers_only.size(), 2u) << fmt::format("{}", fmt::join(lowers_only, " "));
  teardown_with_cli("view");
}

TEST_F(GuestHookShapes, BlockModeWithoutParentsBindsTheUpperDirectoryWritable) {
  json list = json::array(
      {{{"type", "mkfs/ext4"},
        {"source", rwlayer()},
        {"options", {"X-containerd.mkfs.fs=ext4", "X-containerd.mkfs.size=16777216", "rw", "loop"}}},
       {{"type", "format/mkdir/bind"},
        {"source", "{{ mount 0 }}/upper"},
        {"options", {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755", "rbind", "rw"}}}});
  json mounted = hook_then_guest_mount("block-bind", list);
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "bind");
  EXPECT_EQ(mounted.at("read_only"), false);
  EXPECT_EQ(mounted.at("bind_source"), base() + "/block-bind/multi-layer/upper/upper");
  EXPECT_FALSE(read_only_mount(rootfs()));
  write_file(rootfs() + "/written-in-guest", "kept\n");
  teardown_with_cli("block-bind");
  attached.clear();
  // The write is in the ext4 image the hook created, under upper/.
  AttachedImage check_device(rwlayer(), false, true);
  std::string check = work / "check";
  fs::create_directories(check);
  ASSERT_EQ(::mount(check_device.device().c_str(), check.c_str(), "ext4", MS_RDONLY, nullptr), 0);
  std::string written = read_file(check + "/upper/written-in-guest");
  ::umount2(check.c_str(), 0);
  EXPECT_EQ(written, "kept\n");
}

// containerd 2.2.4's own lists (issue 14): the tar-index active snapshot (four tar-index
// layers on the hook's GPT disk, memory-backed upper) and block mode's read-only view without
// parents (the hook creates the image with upper/ in it; the guest binds it read-only).
TEST_F(GuestHookShapes, RealContainerdListsTarIndexAndReadOnlyView) {
  std::string snapshots = work / "real-snapshots";
  for (int n = 1; n <= kTarIndexLayers; ++n) {
    fs::create_directories(fmt::format("{}/{}", snapshots, n));
    fs::copy_file(tarindex_layer(n), fmt::format("{}/{}/layer.erofs", snapshots, n));
  }
  for (int n : {5, 10}) fs::create_directories(fmt::format("{}/{}/fs", snapshots, n));
  json active = json::parse(read_fixture_list(containerd22_list("tarindex-active-4layers"), snapshots));
  json mounted = hook_then_guest_mount("ti", active);
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "overlay");
  for (const auto& [path, contents] : tarindex_merged_files()) {
    EXPECT_EQ(read_file(rootfs() + "/" + path), contents) << path;
  }
  for (const auto& path : tarindex_hidden_paths()) {
    EXPECT_FALSE(fs::exists(rootfs() + "/" + path)) << path;
  }
  teardown_with_cli("ti");

  json view = json::parse(read_fixture_list(containerd22_list("block-view-noparent"), snapshots));
  mounted = hook_then_guest_mount("rov", view);
  ASSERT_FALSE(mounted.is_null());
  EXPECT_EQ(mounted.at("rootfs_kind"), "bind");
  EXPECT_EQ(mounted.at("read_only"), true);
  EXPECT_TRUE(read_only_mount(base() + "/rov/multi-layer/upper"));
  EXPECT_TRUE(fs::is_empty(rootfs()));
  expect_read_only_rootfs();
  teardown_with_cli("rov");
}

}  // namespace
}  // namespace evmdk::test
