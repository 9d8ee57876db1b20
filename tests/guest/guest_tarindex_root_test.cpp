// Tar-index layers (issue 14 item 1), the real ones containerd 2.2.4's differ made with
// enable_tar_index = true (tests/data/fixtures): a 512-byte-block EROFS index whose one device
// is the layer's tar, appended in the same file and mapped there by the device table (empty
// tag). On a raw disk (the layer file itself) and in GPT partitions, the guest driver mounts
// them in flat-device mode where the kernel has it (this host's 6.18; 6.12 in the QEMU lanes)
// and otherwise -- forced here, as on the 6.1 guest kernel, which also refuses the empty
// tag -- through a read-only loop slice of the partition at the device's mapped offset,
// passed as device=. A device mapped beyond the partition is refused before any mount.
#include <gtest/gtest.h>

#include <filesystem>

#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "guest_fixture.h"
#include "real_fixtures.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

std::string digest_of(const std::string& path) { return to_hex(sha256(read_file(path))); }

// The layer's own EROFS UUID, read with the guest's parser (the storages carry it as the host
// would, so the identity check runs too).
std::string erofs_uuid_of(const std::string& image) {
  return guest::read_erofs_superblock(image).uuid;
}

Storage raw_lower(const std::string& device, const std::string& image, unsigned index = 0) {
  Storage lower;
  lower.driver = "blk";
  lower.source = device;
  lower.fstype = "erofs";
  lower.options = {"ro", "X-kata.multi-layer=true", "X-kata.overlay-lower",
                   fmt::format("X-erofs-vmdk.layer-index={}", index),
                   "X-erofs-vmdk.erofs-uuid=" + erofs_uuid_of(image)};
  return lower;
}

// The four layers top first (4, 3, 2, 1), as containerd lists them, one per GPT partition.
std::vector<std::string> top_first_layers() {
  std::vector<std::string> layers;
  for (int n = kTarIndexLayers; n >= 1; --n) layers.push_back(tarindex_layer(n));
  return layers;
}

std::vector<Storage> partition_lowers(const std::string& disk,
                                      const std::vector<std::string>& images) {
  std::vector<Storage> storages;
  for (size_t i = 0; i < images.size(); ++i) {
    Storage lower;
    lower.driver = "blk";
    lower.source = disk;
    lower.fstype = "erofs";
    lower.options = {"ro",
                     "X-kata.multi-layer=true",
                     "X-kata.overlay-lower",
                     "X-kata.gpt-partitioned=true",
                     fmt::format("X-kata.partition-number={}", i + 1),
                     fmt::format("X-erofs-vmdk.layer-index={}", i),
                     fmt::format("X-erofs-vmdk.partuuid={}", GptLayerDisk::part_uuid(i)),
                     "X-erofs-vmdk.erofs-uuid=" + erofs_uuid_of(images[i])};
    storages.push_back(lower);
  }
  return storages;
}

class GuestTarIndex : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_ROOT();
    EVMDK_REQUIRE_TOOLS("losetup", "sgdisk");
  }
  bool try_flat() const { return GetParam(); }
  TempDir temp;
  std::string base() const { return temp / "base"; }
  std::string rootfs() const { return temp / "rootfs"; }

  // Mounts, checks the path the driver took, then tears down and checks nothing is left.
  guest::MountResult mount(std::vector<Storage> storages, const std::string& id) {
    auto request = mount_request(std::move(storages), id, rootfs(), base());
    request.try_flat_device_mode = try_flat();
    auto result = guest::mount_rootfs(request);
    EXPECT_EQ(result.flat_device_mode, try_flat());
    return result;
  }

  void expect_refused(std::vector<Storage> storages, const std::vector<std::string>& needles) {
    auto request = mount_request(std::move(storages), "bad", rootfs(), base());
    request.try_flat_device_mode = try_flat();
    try {
      guest::mount_rootfs(request);
      ADD_FAILURE() << "mount was not refused";
    } catch (const Error& error) {
      std::string what = error.what();
      for (const auto& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
    expect_nothing_left(base(), rootfs());
    EXPECT_FALSE(fs::exists(guest::journal_path(base(), "bad")));
  }
};

// The layer file itself as the disk (compose --mode raw, or a hook's single layer): a
// read-only bind of it, every byte of its files read through the device mapping.
TEST_P(GuestTarIndex, RawDiskOfOneLayer) {
  for (int n : {1, 2}) {
    SCOPED_TRACE(fmt::format("layer {}", n));
    AttachedImage disk(tarindex_layer(n), false, true);
    auto lower = raw_lower(disk.device(), tarindex_layer(n));
    lower.options.push_back("X-erofs-vmdk.rootfs-readonly=true");
    TeardownGuard guard(base(), "raw", rootfs());
    auto result = mount({lower}, "raw");
    EXPECT_EQ(result.rootfs_kind, "bind");
    // Flat-device mode needs no loop device at all; otherwise exactly one slice: the tar.
    EXPECT_EQ(result.loop_devices.size(), try_flat() ? 0u : 1u);
    if (n == 1) {
      EXPECT_EQ(digest_of(rootfs() + "/big.bin"), tarindex_file_digests().at("big.bin"));
      EXPECT_EQ(read_file(rootfs() + "/etc/hostname"), "base\n");
      EXPECT_EQ(read_file(rootfs() + "/bin/hello"), "#!/bin/sh\necho hello\n");
    } else {
      EXPECT_EQ(digest_of(rootfs() + "/mid.bin"), tarindex_file_digests().at("mid.bin"));
      EXPECT_EQ(read_file(rootfs() + "/etc/hostname"), "layer1\n");
    }
    teardown_and_expect_nothing_left("raw", base(), rootfs());
    EXPECT_TRUE(loops_backed_by(disk.device()).empty());
  }
}

// Four tar-index layers in four GPT partitions, merged by the overlay: top wins, whiteouts
// and layer 3's opaque directory hide what is below, and the container writes into the upper.
TEST_P(GuestTarIndex, FourPartitionsMergeAsTheSnapshotterDoes) {
  auto images = top_first_layers();
  auto layout = GptLayerDisk::from_images(temp, images);
  AttachedImage disk(layout.image(), true, true);
  TeardownGuard guard(base(), "four", rootfs());
  auto result = mount(partition_lowers(disk.device(), images), "four");
  EXPECT_EQ(result.rootfs_kind, "overlay");
  EXPECT_EQ(result.lowers.size(), 4u);
  if (!try_flat()) {
    // One slice per layer's tar (plus one per partition when this kernel shows no partitions).
    EXPECT_GE(result.loop_devices.size(), 4u);
  }
  for (const auto& [path, contents] : tarindex_merged_files()) {
    EXPECT_EQ(read_file(rootfs() + "/" + path), contents) << path;
  }
  for (const auto& path : tarindex_hidden_paths()) {
    EXPECT_FALSE(fs::exists(rootfs() + "/" + path)) << path << " should be hidden";
  }
  for (const auto& [path, digest] : tarindex_file_digests()) {
    EXPECT_EQ(digest_of(rootfs() + "/" + path), digest) << path;
  }
  write_file(rootfs() + "/etc/hostname", "written\n");
  EXPECT_EQ(read_file(rootfs() + "/etc/hostname"), "written\n");
  teardown_and_expect_nothing_left("four", base(), rootfs());
  EXPECT_TRUE(loops_backed_by(disk.device()).empty());
}

// A partition too small for the tar its layer's device table maps (the first MiB of layer 1,
// whose tar runs to byte 1069568), and the same cut-off layer as a raw disk: refused naming
// the device and the range, before anything is mounted or a loop device attached.
TEST_P(GuestTarIndex, DeviceMappedBeyondThePartitionIsRefused) {
  std::string cut = temp / "cut.erofs";
  write_file(cut, read_file(tarindex_layer(1)).substr(0, 1 << 20));
  {
    auto layout = GptLayerDisk::from_images(temp, {cut});
    AttachedImage disk(layout.image(), true, true);
    expect_refused(partition_lowers(disk.device(), {cut}),
                   {"layer 0", "device 1: bytes 4096..1069568 lie beyond the end of the partition",
                    "(1048576 bytes)", "rolled back"});
    EXPECT_TRUE(loops_backed_by(disk.device()).empty());
  }
  AttachedImage raw(cut, false, true);
  expect_refused({raw_lower(raw.device(), cut)},
                 {"device 1: bytes 4096..1069568 lie beyond the end of the disk", "rolled back"});
  EXPECT_TRUE(loops_backed_by(raw.device()).empty());
}

INSTANTIATE_TEST_SUITE_P(Paths, GuestTarIndex, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "FlatDeviceMode" : "LoopSliceAndDeviceOption";
                         });

}  // namespace
}  // namespace evmdk::test
