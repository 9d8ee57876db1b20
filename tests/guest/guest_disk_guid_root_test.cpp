// Finding the composed disk without a serial (Firecracker sets none): compose writes
// `gpt-disk-guid:<GUID>` sources (--disk-id gpt-guid), the composed raw disks are attached as
// read-only partition-scanned loop devices, and the guest driver scans the whole disks for the
// one whose primary GPT header carries that disk GUID, then mounts compose's own storages
// unchanged. Also: a GUID no disk has times out naming the source, the same GUID on two disks
// is refused naming both (never a guess), and a malformed source is refused at plan time. The
// hook's --disk-id gpt-guid: two containers of one image in one guest each find their own disk.
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/plan.h"
#include "containerd_mounts.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/hook/hook.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Composed {
  std::vector<Storage> storages;
  std::string disk_guid;
  std::string image;  // the raw disk (disk.img)
};

// A gpt disk of two real EROFS layers, as `erofs-vmdk compose --mode gpt --format raw
// --allow-copy --disk-id gpt-guid` writes it; `tag` makes its layers (and so its GUID) unique.
Composed compose_disk(const TempDir& temp, unsigned tag, const std::string& motd) {
  host::ComposeOptions options;
  options.mode = host::ComposeMode::Gpt;
  options.format = host::DiskFormat::Raw;
  options.allow_copy = true;
  options.disk_id = host::DiskId::GptGuid;
  // Unique per test process: ctest runs these tests in parallel, and two processes attaching
  // disks of one GUID at once would make each other's lookups ambiguous.
  options.disk_guid_salt = fmt::format("test process {} disk {}", ::getpid(), tag);
  LayerSpec top, base;
  top.files = {{"etc/motd", motd}};
  top.whiteouts = {"etc/old"};
  base.files = {{"etc/motd", "base\n"}, {"etc/old", "gone\n"}, {"usr/bin/tool", "t\n"}};
  std::vector<LayerSpec> layers{top, base};
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string src = temp / fmt::format("src-{}-{}", tag, i);
    build_layer_dir(src, layers[i]);
    std::string image = temp / fmt::format("layer-{}-{}.erofs", tag, i);
    make_erofs(src, image, test_uuid(150 + tag, static_cast<unsigned>(i)));
    options.layers.push_back({image, {}});
  }
  options.output_dir = temp / fmt::format("composed-{}", tag);
  auto result = host::compose(options);
  return {result.storages, result.disk_guid, result.disk_path};
}

class GuestDiskGuid : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "losetup", "setfattr");
    a_ = compose_disk(temp_, 1, "disk a\n");
    b_ = compose_disk(temp_, 2, "disk b\n");
    ASSERT_NE(a_.disk_guid, b_.disk_guid);
    ASSERT_EQ(b_.storages.size(), 2u);
    for (const auto& storage : b_.storages) {
      ASSERT_EQ(storage.source, "gpt-disk-guid:" + b_.disk_guid);
    }
  }
  TempDir temp_;
  Composed a_, b_;
};

TEST_F(GuestDiskGuid, FindsTheDiskWithThatGuidAndMountsComposesOwnStorages) {
  AttachedImage disk_a(a_.image, true, true), disk_b(b_.image, true, true);
  EXPECT_EQ(guest::find_disk(b_.storages[0].source, std::chrono::seconds(5)), disk_b.device());
  EXPECT_EQ(guest::find_disk(a_.storages[0].source, std::chrono::seconds(5)), disk_a.device());

  std::string base_dir = temp_ / "base", rootfs = temp_ / "rootfs";
  TeardownGuard guard(base_dir, "guid-b", rootfs);
  guest::mount_rootfs(mount_request(b_.storages, "guid-b", rootfs, base_dir));
  EXPECT_EQ(read_file(rootfs + "/etc/motd"), "disk b\n");
  EXPECT_EQ(read_file(rootfs + "/usr/bin/tool"), "t\n");
  EXPECT_FALSE(fs::exists(rootfs + "/etc/old"));
  teardown_and_expect_nothing_left("guid-b", base_dir, rootfs);
}

TEST_F(GuestDiskGuid, AGuidNoDiskHasTimesOutNamingTheSource) {
  AttachedImage disk_a(a_.image, true, true), disk_b(b_.image, true, true);
  const std::string source = "gpt-disk-guid:0f203142-5364-7586-97a8-b9cadbecfd0e";
  auto start = std::chrono::steady_clock::now();
  std::string error = error_of([&] { guest::find_disk(source, std::chrono::milliseconds(400)); });
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_THAT(error, AllOf(HasSubstr(source), HasSubstr("no disk whose primary GPT header"),
                           HasSubstr("after 400 ms")));
  EXPECT_GE(waited, std::chrono::milliseconds(400));
  EXPECT_LT(waited, std::chrono::seconds(10));

  // Through the driver: the mount fails with that error and leaves nothing.
  auto storages = b_.storages;
  for (auto& storage : storages) storage.source = source;
  std::string base_dir = temp_ / "base", rootfs = temp_ / "rootfs";
  TeardownGuard guard(base_dir, "guid-none", rootfs);
  auto request = mount_request(storages, "guid-none", rootfs, base_dir);
  request.device_timeout = std::chrono::milliseconds(300);
  EXPECT_THAT(error_of([&] { guest::mount_rootfs(request); }),
              AllOf(HasSubstr(source), HasSubstr("no disk whose primary GPT header")));
  EXPECT_TRUE(mount_points_under(base_dir).empty());
}

TEST_F(GuestDiskGuid, TwoDisksWithTheSameGuidAreRefusedNamingBoth) {
  AttachedImage first(a_.image, true, true), second(a_.image, true, true), other(b_.image, true, true);
  std::string error =
      error_of([&] { guest::find_disk(a_.storages[0].source, std::chrono::seconds(5)); });
  EXPECT_THAT(error, AllOf(HasSubstr(a_.storages[0].source), HasSubstr(first.device()),
                           HasSubstr(second.device()), HasSubstr("refusing to pick one")));
  EXPECT_THAT(error, ::testing::Not(HasSubstr(other.device() + ",")));

  std::string base_dir = temp_ / "base", rootfs = temp_ / "rootfs";
  TeardownGuard guard(base_dir, "guid-two", rootfs);
  EXPECT_THAT(error_of([&] {
                guest::mount_rootfs(mount_request(a_.storages, "guid-two", rootfs, base_dir));
              }),
              HasSubstr("refusing to pick one"));
  EXPECT_TRUE(mount_points_under(base_dir).empty());
  EXPECT_FALSE(fs::exists(rootfs + "/etc/motd"));
  // The other disk is still found: the ambiguity concerns only that GUID.
  EXPECT_EQ(guest::find_disk(b_.storages[0].source, std::chrono::seconds(5)), other.device());
}

TEST_F(GuestDiskGuid, AMalformedSourceIsRefusedAtPlanTime) {
  for (const std::string& bad :
       {std::string("gpt-disk-guid:") + b_.disk_guid.substr(1),
        "gpt-disk-guid:" + [&] {
          std::string upper = b_.disk_guid;
          for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          return upper;
        }(),
        "gpt-disk-guid:" + b_.disk_guid + " "}) {
    auto storages = b_.storages;
    storages[1].source = bad;
    EXPECT_THAT(error_of([&] { guest::make_plan(storages); }),
                AllOf(HasSubstr("storage #1"), HasSubstr(bad), HasSubstr("lower-case hex")))
        << bad;
    // Refused before any device is looked at: no wait for the (never found) disk.
    std::string base_dir = temp_ / "base", rootfs = temp_ / "rootfs";
    TeardownGuard guard(base_dir, "guid-bad", rootfs);
    auto start = std::chrono::steady_clock::now();
    EXPECT_THAT(
        error_of([&] { guest::mount_rootfs(mount_request(storages, "guid-bad", rootfs, base_dir)); }),
        HasSubstr("lower-case hex"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
}

// The hook with --disk-id gpt-guid, two containers of the same layers: each lower disk's GUID
// is salted per container, so both disks are attached at once and each container's storages
// find their own disk (no ambiguity), and both rootfs mount and tear down.
TEST(GuestHookDiskGuid, TwoContainersOfOneImageInOneGuestFindTheirOwnDisks) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "losetup");
  TempDir work;
  std::vector<std::string> layers;
  for (int n = 2; n >= 1; --n) {  // top first
    std::string dir = work / fmt::format("snapshots/{}", n);
    make_tree(dir + "/tree", {{fmt::format("etc/layer{}", n), fmt::format("layer {}\n", n)}});
    make_erofs(dir + "/tree", dir + "/layer.erofs", test_uuid(160, static_cast<unsigned>(n)));
    layers.push_back(dir + "/layer.erofs");
  }
  fs::create_directories(work / "snapshots/9");
  struct Container {
    std::string id;
    std::vector<Storage> storages;
    std::vector<std::unique_ptr<AttachedImage>> disks;
  };
  std::vector<Container> containers(2);
  for (size_t c = 0; c < containers.size(); ++c) {
    Container& container = containers[c];
    container.id = fmt::format("guid-c{}", c + 1);
    host::HookRequest request;
    request.id = container.id;
    request.state_dir = work / "state";
    request.mounts = host::parse_mount_list(containerd_block_mode_list(
        work / fmt::format("snapshots/9/rw-{}.img", c), 16 << 20, layers));
    request.disk_format = host::DiskFormat::Raw;
    request.allow_copy = true;
    request.disk_id = host::DiskId::GptGuid;
    auto output = host::run_hook(request);
    std::map<std::string, std::string> device_of_serial;
    for (const auto& disk : output.at("disks")) {
      bool read_only = disk.at("read_only").get<bool>();
      container.disks.push_back(
          std::make_unique<AttachedImage>(disk.at("path").get<std::string>(), read_only, read_only));
      device_of_serial[disk.at("serial")] = container.disks.back()->device();
    }
    container.storages = storages_from_json(
        nlohmann::json::parse(read_file(output.at("dir").get<std::string>() + "/storage.json")));
    for (auto& storage : container.storages) {
      if (storage.fstype == "erofs") {
        EXPECT_EQ(storage.source.rfind("gpt-disk-guid:", 0), 0u) << storage.source;
      } else if (storage.source.rfind("serial:", 0) == 0) {  // the upper keeps its serial
        storage.source = device_of_serial.at(storage.source.substr(7));
      }
    }
  }
  ASSERT_NE(containers[0].storages.at(0).source, containers[1].storages.at(0).source);
  std::vector<std::unique_ptr<TeardownGuard>> guards;
  for (const auto& container : containers) {
    std::string rootfs = work / (container.id + "-rootfs");
    guards.push_back(std::make_unique<TeardownGuard>(work / "base", container.id, rootfs));
    guest::mount_rootfs(mount_request(container.storages, container.id, rootfs, work / "base"));
    EXPECT_EQ(read_file(rootfs + "/etc/layer2"), "layer 2\n");
    EXPECT_EQ(read_file(rootfs + "/etc/layer1"), "layer 1\n");
    write_file(rootfs + "/etc/written", container.id);
  }
  for (const auto& container : containers) {
    std::string rootfs = work / (container.id + "-rootfs");
    EXPECT_EQ(read_file(rootfs + "/etc/written"), container.id);
    auto report = guest::teardown_rootfs(teardown_request(container.id, work / "base"));
    EXPECT_TRUE(report.clean()) << report.to_json().dump(1);
    EXPECT_TRUE(mount_points_under(rootfs).empty());
  }
  EXPECT_TRUE(mount_points_under(work / "base").empty());
}

}  // namespace
}  // namespace evmdk::test
