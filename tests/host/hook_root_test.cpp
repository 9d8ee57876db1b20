// The hook's block-mode output, consumed the way a guest would on real devices: the lower disk
// (converted to raw by qemu-img, partitions read back with partx, an independent GPT reader)
// and the upper image it created. Each lower storage's partition must hold the layer the
// storage names (EROFS UUID via libblkid), and an overlay assembled only from the storages
// (layer-index order, mkdir directives, ext4 upper) shows the merged view containerd meant.
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <sys/mount.h>

#include <filesystem>
#include <memory>
#include <sstream>

#include "containerd_mounts.h"
#include "evmdk/guest/verity.h"
#include "evmdk/host/hook/hook.h"
#include "loop_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A read-write mount released on destruction (the tree's other mounts are read-only).
class Mount {
 public:
  Mount(const std::string& source, const std::string& target, const std::string& type,
        unsigned long flags, const std::string& data) : target_(target) {
    fs::create_directories(target);
    if (::mount(source.c_str(), target.c_str(), type.c_str(), flags,
                data.empty() ? nullptr : data.c_str()) != 0) {
      throw std::runtime_error("mount " + type + " " + source + " on " + target + ": " +
                               std::strerror(errno));
    }
  }
  ~Mount() { ::umount2(target_.c_str(), 0); }
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

 private:
  std::string target_;
};

std::string option(const json& storage, const std::string& key) {
  for (const auto& item : storage["options"]) {
    std::string text = item.get<std::string>();
    if (text.rfind(key + "=", 0) == 0) return text.substr(key.size() + 1);
  }
  return {};
}

TEST(HookRoot, BlockModeOutputMountsAsTheHostMeant) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "qemu-img", "partx", "losetup", "blkid");
  test::TempDir work;
  const std::vector<std::pair<std::string, std::map<std::string, std::string>>> layers{
      {"33333333-3333-4333-8333-333333333333", {{"opt/app/version", "top\n"}, {"etc/motd", "top\n"}}},
      {"22222222-2222-4222-8222-222222222222", {{"opt/app/version", "middle\n"}, {"opt/app/tool", "tool\n"}}},
      {"11111111-1111-4111-8111-111111111111", {{"opt/app/version", "base\n"}, {"etc/os-release", "base\n"}}}};
  const std::string rwlayer = work / "snapshots/9/rwlayer.img";
  fs::create_directories(work / "snapshots/9");
  std::vector<std::string> images;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string dir = work / ("snapshots/" + std::to_string(3 - i));
    test::make_tree(dir + "/tree", layers[i].second);
    test::make_erofs(dir + "/tree", dir + "/layer.erofs", layers[i].first);
    images.push_back(dir + "/layer.erofs");
  }
  json list = test::containerd_block_mode_list(rwlayer, 16777216, images);
  json output = run_hook({"e2e", work / "state", parse_mount_list(list)});

  json lowers_disk, upper_disk;
  for (const auto& disk : output["disks"]) {
    (disk["role"] == "upper" ? upper_disk : lowers_disk) = disk;
  }
  ASSERT_EQ(lowers_disk["format"], "vmdk");
  const std::string raw = work / "lowers.raw";
  auto convert = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                            lowers_disk["path"].get<std::string>(), raw});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;

  // Partition table as partx (libblkid) reads it from the raw image.
  auto partx = test::run({"partx", "--raw", "--noheadings", "--bytes", "-o", "NR,START,SIZE", raw});
  ASSERT_EQ(partx.exit_code, 0) << partx.err;
  std::vector<std::pair<uint64_t, uint64_t>> parts;
  std::istringstream rows(partx.out);
  for (uint64_t nr, start, size; rows >> nr >> start >> size;) parts.emplace_back(start * 512, size);
  ASSERT_EQ(parts.size(), 3u) << partx.out;
  test::PartitionedDisk disk(raw, parts);

  // Mount each lower where its storage says, after checking it holds the layer it names.
  std::vector<json> lower_storages(3);
  json upper_storage;
  for (const auto& storage : output["storages"]) {
    if (storage["fstype"] == "ext4") {
      upper_storage = storage;
      continue;
    }
    EXPECT_EQ(storage["source"], "serial:" + lowers_disk["serial"].get<std::string>());
    size_t index = std::stoul(option(storage, "X-erofs-vmdk.layer-index"));
    ASSERT_LT(index, 3u);
    lower_storages[index] = storage;
  }
  ASSERT_EQ(upper_storage["source"], "serial:" + upper_disk["serial"].get<std::string>());
  const std::string base = work / "run/e2e/multi-layer";
  std::vector<std::unique_ptr<test::ReadOnlyMount>> lower_mounts;
  std::string lowerdir;
  for (size_t i = 0; i < 3; ++i) {
    const json& storage = lower_storages[i];
    ASSERT_FALSE(storage.is_null()) << "no storage for lower-" << i;
    EXPECT_EQ(storage["mount_point"], "lower-" + std::to_string(i));
    size_t partition = std::stoul(option(storage, "X-kata.partition-number"));
    std::string device = disk.partition(partition);
    auto uuid = test::run({"blkid", "-p", "-o", "value", "-s", "UUID", device});
    EXPECT_EQ(uuid.out, option(storage, "X-erofs-vmdk.erofs-uuid") + "\n") << device;
    EXPECT_EQ(uuid.out, layers[i].first + "\n") << "lower-" << i << " is not the layer containerd listed at " << i;
    std::string target = base + "/lower-" + std::to_string(i);
    lower_mounts.push_back(std::make_unique<test::ReadOnlyMount>(device, target, "erofs"));
    lowerdir += (i ? ":" : "") + target;
  }

  // The upper the hook created: ext4, writable; mkdir directives from the storage options.
  auto type = test::run({"blkid", "-p", "-o", "value", "-s", "TYPE", rwlayer});
  EXPECT_EQ(type.out, "ext4\n");
  auto losetup = test::run({"losetup", "--find", "--show", rwlayer});
  ASSERT_EQ(losetup.exit_code, 0) << losetup.err;
  std::string upper_device = losetup.out.substr(0, losetup.out.find('\n'));
  struct Detach {
    std::string device;
    ~Detach() { test::run({"losetup", "--detach", device}); }
  } detach{upper_device};
  const std::string upper_root = base + "/upper";
  {
    Mount upper(upper_device, upper_root, "ext4", 0, "");
    for (const auto& item : upper_storage["options"]) {
      std::string text = item.get<std::string>();
      const std::string key = "X-containerd.mkdir.path={{ mount 0 }}/";
      if (text.rfind(key, 0) != 0) continue;
      std::string rest = text.substr(key.size());
      fs::create_directories(upper_root + "/" + rest.substr(0, rest.find(':')));
    }
    const std::string rootfs = work / "rootfs";
    {
      Mount overlay("overlay", rootfs, "overlay", 0,
                    "lowerdir=" + lowerdir + ",upperdir=" + upper_root + "/upper,workdir=" +
                        upper_root + "/work");
      EXPECT_EQ(test::read_file(rootfs + "/opt/app/version"), "top\n");
      EXPECT_EQ(test::read_file(rootfs + "/opt/app/tool"), "tool\n");
      EXPECT_EQ(test::read_file(rootfs + "/etc/os-release"), "base\n");
      test::write_file(rootfs + "/written-in-guest", "kept\n");
    }
    EXPECT_EQ(test::read_file(upper_root + "/upper/written-in-guest"), "kept\n");
  }
  lower_mounts.clear();
  EXPECT_TRUE(cleanup_hook("e2e", work / "state").left.empty());
  EXPECT_FALSE(fs::exists(work / "state/e2e"));
  EXPECT_TRUE(fs::exists(rwlayer));  // containerd's, not the hook's to remove
}


// The hook's storage.json, fed unchanged (except disk sources: loop devices stand in for the
// virtio disks the serials name) to `erofs-vmdk guest mount`, then `guest teardown`.
TEST(HookRoot, GuestMountConsumesTheHookStoragesDirectly) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "losetup");
  test::TempDir work;
  std::string layer_dir = work / "snapshots/1";
  test::make_tree(layer_dir + "/tree", {{"etc/motd", "from the layer\n"}, {"bin/", ""}});
  test::make_erofs(layer_dir + "/tree", layer_dir + "/layer.erofs", "44444444-4444-4444-8444-444444444444");
  fs::create_directories(work / "snapshots/9");
  const std::string rwlayer = work / "snapshots/9/rwlayer.img";
  json list = test::containerd_block_mode_list(rwlayer, 16777216, {layer_dir + "/layer.erofs"});
  json output = run_hook({"guest-e2e", work / "state", parse_mount_list(list)});

  // Attach each disk as the VM would (read-only as the hook says) and point its storages at it.
  std::map<std::string, std::string> device_of_serial;
  std::vector<std::unique_ptr<test::LoopDevice>> read_only;
  std::string upper_device;
  for (const auto& disk : output["disks"]) {
    ASSERT_EQ(disk["format"], "raw") << "one lower: the layer itself is the disk";
    std::string path = disk["path"];
    if (disk["read_only"].get<bool>()) {
      read_only.push_back(std::make_unique<test::LoopDevice>(path, false));
      device_of_serial[disk["serial"]] = read_only.back()->device();
    } else {
      auto losetup = test::run({"losetup", "--find", "--show", path});
      ASSERT_EQ(losetup.exit_code, 0) << losetup.err;
      upper_device = losetup.out.substr(0, losetup.out.find('\n'));
      device_of_serial[disk["serial"]] = upper_device;
    }
  }
  struct Detach {
    std::string device;
    ~Detach() {
      if (!device.empty()) test::run({"losetup", "--detach", device});
    }
  } detach{upper_device};
  json storages = json::parse(test::read_file(output["dir"].get<std::string>() + "/storage.json"));
  for (auto& storage : storages) {
    std::string serial = storage["source"].get<std::string>().substr(std::string("serial:").size());
    ASSERT_TRUE(device_of_serial.count(serial)) << storage.dump();
    storage["source"] = device_of_serial[serial];
  }
  test::write_file(work / "guest-storage.json", storages.dump());

  const std::string rootfs = work / "rootfs";
  const std::string base = work / "guest-base";
  fs::create_directories(rootfs);
  auto mount = test::cli({"guest", "mount", "-s", work / "guest-storage.json", "-i", "guest-e2e",
                          "-r", rootfs, "-b", base});
  bool mounted = mount.exit_code == 0;
  EXPECT_TRUE(mounted) << mount.out << mount.err;
  if (mounted) {
    EXPECT_EQ(test::read_file(rootfs + "/etc/motd"), "from the layer\n");
    test::write_file(rootfs + "/written", "kept\n");
  }
  auto teardown = test::cli({"guest", "teardown", "-i", "guest-e2e", "-r", rootfs, "-b", base});
  EXPECT_EQ(teardown.exit_code, 0) << teardown.out << teardown.err;
  EXPECT_EQ(test::sh("grep -c " + work.path() + " /proc/mounts").out, "0\n");
  auto dm = guest::device_mapper_names();
  EXPECT_TRUE(dm.empty()) << "device-mapper devices left: " << fmt::format("{}", fmt::join(dm, " "));
  if (mounted) {
    // The write landed in the ext4 upper the hook created.
    test::ReadOnlyMount check(upper_device, work / "check", "ext4");
    EXPECT_EQ(test::read_file(work / "check/upper/written"), "kept\n");
  }
}

}  // namespace
}  // namespace evmdk::host
