// Flat (fsmeta) disks: one multi-device EROFS image whose extra device lives on the same disk
// at its device-table mapped_blkaddr. Mounted in flat-device mode where the kernel has it, else
// (forced here, as on the 6.1 guest kernel) via read-only loop slices + device= options.
// Also the 6.1 overlay path: lowers in one page of mount(2) data with relative paths.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/verity.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

// meta.img (chunked files whose data is in blob.img, made by mkfs.erofs --blobdev) followed by
// the blob on one raw disk; the device table slot is filled in as a flat composer does.
std::string make_flat_disk(const TempDir& temp, const std::string& uuid) {
  std::string src = temp / "flat-src";
  make_tree(src, {{"etc/motd", "flat motd\n"}, {"data/blob.bin", std::string(50000, 'z')}});
  std::string meta = temp / "meta.img", blob = temp / "blob.img";
  make_erofs(src, meta, uuid, {"--chunksize=4096", "--blobdev=" + blob});
  std::string meta_bytes = read_file(meta);
  std::string blob_bytes = read_file(blob);
  const size_t block = 4096;
  meta_bytes.resize((meta_bytes.size() + block - 1) / block * block);
  uint32_t meta_blocks = static_cast<uint32_t>(meta_bytes.size() / block);
  uint32_t blob_blocks = static_cast<uint32_t>((blob_bytes.size() + block - 1) / block);
  blob_bytes.resize(blob_blocks * block);
  auto* sb = reinterpret_cast<unsigned char*>(meta_bytes.data()) + 1024;
  uint16_t slot_offset = static_cast<uint16_t>(sb[88] | sb[89] << 8);
  auto* slot = reinterpret_cast<unsigned char*>(meta_bytes.data()) + slot_offset * 128;
  auto put32 = [](unsigned char* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
  };
  put32(slot + 64, blob_blocks);
  put32(slot + 68, meta_blocks);
  if (sb[8] & 1) {  // SB_CHKSUM: recompute over [1024, 4096) with the field zeroed
    put32(sb + 4, 0);
    put32(sb + 4, crc32c_update(~0u, sb, block - 1024));
  }
  std::string disk = temp / "flat.img";
  write_file(disk, meta_bytes + blob_bytes);
  return disk;
}

class GuestFlat : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "losetup");
  }
  TempDir temp;
  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }

  void mount_and_check(bool try_flat, bool expect_flat_mode) {
    std::string uuid = test_uuid(7, 0);
    std::string disk = make_flat_disk(temp, uuid);
    AttachedImage attached(disk, false);
    auto sb = guest::read_erofs_superblock(attached.device());
    ASSERT_EQ(sb.devices.size(), 1u);
    EXPECT_EQ(sb.devices[0].mapped_blkaddr, 1u);
    Storage lower;
    lower.driver = "blk";
    lower.source = attached.device();
    lower.fstype = "erofs";
    lower.options = {"ro", "X-kata.overlay-lower", "X-erofs-vmdk.erofs-uuid=" + uuid};
    TeardownGuard guard(base(), "flat", rootfs());
    auto request = mount_request({lower}, "flat", rootfs(), base());
    request.try_flat_device_mode = try_flat;
    auto result = guest::mount_rootfs(request);
    EXPECT_EQ(result.flat_device_mode, expect_flat_mode);
    EXPECT_EQ(result.loop_devices.size(), expect_flat_mode ? 0u : 1u);
    EXPECT_EQ(read_file(rootfs() + "/etc/motd"), "flat motd\n");
    EXPECT_EQ(read_file(rootfs() + "/data/blob.bin"), std::string(50000, 'z'));  // from the blob
    teardown_and_expect_nothing_left("flat", base(), rootfs());
    EXPECT_TRUE(loops_backed_by(attached.device()).empty());
  }
};

TEST_F(GuestFlat, FlatDeviceModeWhereTheKernelHasIt) {
  // This host's kernel is 6.18 (flat-device mode since 6.4); the 6.1 guest kernel is covered
  // by the loop-slice test below and the QEMU tests.
  mount_and_check(true, true);
}

TEST_F(GuestFlat, LoopSlicesAndDeviceOptionsOtherwise) { mount_and_check(false, false); }

TEST_F(GuestFlat, SixtyFourLowersThroughOnePageOfRelativeMountData) {
  EVMDK_REQUIRE_TOOLS("sgdisk", "setfattr");
  std::vector<LayerSpec> specs(64);
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].files = {{fmt::format("l/{}", i), "x"}, {"which", fmt::format("{}", i)}};
  }
  GptLayerDisk disk(temp, specs);
  AttachedImage layers(disk.image(), true);
  const std::string long_base =
      base() + "/a/deliberately/long/base/directory/path/that/would/not/fit/sixty/four/times";
  TeardownGuard guard(long_base, "legacy", rootfs());
  auto request = mount_request(gpt_storages(layers.device(), specs.size(), ""), "legacy", rootfs(), long_base);
  request.try_lowerdir_plus = false;
  auto result = guest::mount_rootfs(request);
  EXPECT_EQ(result.overlay_method, "mount(2) relative paths");
  EXPECT_EQ(read_file(rootfs() + "/which"), "0");
  EXPECT_TRUE(fs::exists(rootfs() + "/l/63"));
  teardown_and_expect_nothing_left("legacy", long_base, rootfs());
  expect_nothing_left(base(), rootfs());
}

TEST_F(GuestFlat, RefusedOverlayOptionNamesBothMethodsAndRollsBack) {
  EVMDK_REQUIRE_TOOLS("sgdisk", "setfattr");
  LayerSpec layer;
  layer.files = {{"etc/motd", "x\n"}};
  GptLayerDisk disk(temp, {layer});
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 1, "");
  // Allowlisted options (unknown ones are refused before anything is mounted, see
  // guest_trust_root_test) that the kernel refuses together.
  storages[0].options.push_back("X-erofs-vmdk.overlay-option=redirect_dir=off");
  storages[0].options.push_back("X-erofs-vmdk.overlay-option=metacopy=on");
  auto request = mount_request(storages, "opt", rootfs(), base());
  try {
    guest::mount_rootfs(request);
    ADD_FAILURE() << "overlay accepted conflicting options";
  } catch (const Error& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("metacopy"), std::string::npos) << message;
    EXPECT_NE(message.find("mount(2)"), std::string::npos) << message;
    EXPECT_NE(message.find("lowerdir+"), std::string::npos) << message;
    EXPECT_NE(message.find("rolled back"), std::string::npos) << message;
  }
  expect_nothing_left(base(), rootfs());
  EXPECT_FALSE(fs::exists(rootfs()));
  EXPECT_TRUE(loops_backed_by(layers.device()).empty());
}

}  // namespace
}  // namespace evmdk::test

namespace evmdk::test {
namespace {

// dm-verity lowers go through the verity engineer's VerityDevice: activated over the
// partition, mounted, removed by teardown. This host kernel has no device-mapper, so here the
// mount must be refused cleanly (rolled back, nothing left); with device-mapper it must mount
// and teardown must remove the device. The 6.1 guest covers the latter in QEMU tests.
TEST(GuestVerity, VerityLowerMountsWithDeviceMapperElseIsRefusedAndRolledBack) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "sgdisk", "losetup", "setfattr", "veritysetup");
  TempDir temp;
  LayerSpec top;
  top.files = {{"etc/motd", "protected\n"}};
  std::string root_hash;
  uint64_t hash_offset = 0;
  GptLayerDisk disk(temp, {top}, [&](size_t, const std::string& image) {
    hash_offset = std::filesystem::file_size(image);
    auto out = must(run({"veritysetup", "format", "--hash-offset", std::to_string(hash_offset), image, image}),
                    "veritysetup format");
    auto pos = out.find("Root hash:");
    root_hash = trim(out.substr(out.find_first_not_of(" \t", pos + 10)));
  });
  AttachedImage layers(disk.image(), true);
  auto storages = gpt_storages(layers.device(), 1, "");
  guest::VerityParams params;
  params.root_hash = root_hash;
  params.hash_offset = hash_offset;
  for (const auto& option : guest::verity_options(params)) storages[0].options.push_back(option);
  std::string base = temp / "base", rootfs = temp / "rootfs";
  TeardownGuard guard(base, "v", rootfs);
  auto request = mount_request(storages, "v", rootfs, base);
  if (!guest::device_mapper_available()) {
    try {
      guest::mount_rootfs(request);
      ADD_FAILURE() << "a dm-verity lower mounted without device-mapper";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("layer 0"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("rolled back"), std::string::npos) << error.what();
    }
  } else {
    auto result = guest::mount_rootfs(request);
    ASSERT_EQ(result.verity_devices.size(), 1u);
    EXPECT_TRUE(guest::verity_device_exists(result.verity_devices[0]));
    EXPECT_EQ(read_file(rootfs + "/etc/motd"), "protected\n");
    teardown_and_expect_nothing_left("v", base, rootfs);
    EXPECT_FALSE(guest::verity_device_exists(result.verity_devices[0]));
  }
  expect_nothing_left(base, rootfs);
  EXPECT_FALSE(std::filesystem::exists(base + "/v"));
  EXPECT_FALSE(std::filesystem::exists(guest::journal_path(base, "v")));
}

}  // namespace
}  // namespace evmdk::test
