// Finding the composed disk without a serial (Firecracker sets none): compose writes
// `gpt-disk-guid:<GUID>` sources (--disk-id gpt-guid), the composed raw disks are attached as
// read-only partition-scanned loop devices, and the guest driver scans the whole disks for the
// one whose primary GPT header carries that disk GUID, then mounts compose's own storages
// unchanged. Also: a GUID no disk has times out naming the source, the same GUID on two disks
// is refused naming both (never a guess), and a malformed source is refused at plan time.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/plan.h"
#include "evmdk/host/compose/compose.h"
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

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(no error)";
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

}  // namespace
}  // namespace evmdk::test
