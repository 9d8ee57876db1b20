// The composed GPT disk as the guest sees it: qemu-img converts the VMDK to the raw bytes QEMU
// presents, a partition-scanned loop device exposes the partitions, libblkid reports the
// expected PARTUUIDs, and each partition mounts as EROFS with exactly its layer's files
// (including overlayfs whiteouts and an opaque directory).
#include <blkid/blkid.h>
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/host/compose/compose.h"
#include "layer_fixtures.h"
#include "loop_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string blkid_value(const std::string& device, const char* name) {
  char* value = blkid_get_tag_value(nullptr, name, device.c_str());
  std::string out = value ? value : "";
  free(value);
  return out;
}

struct BlkidPartition {
  std::string partuuid;
  uint64_t offset = 0, size = 0;  // bytes
};

// libblkid's partition prober on the whole disk, by partition number.
std::map<int, BlkidPartition> blkid_partitions(const std::string& disk) {
  std::map<int, BlkidPartition> out;
  blkid_probe probe = blkid_new_probe_from_filename(disk.c_str());
  if (!probe) return out;
  blkid_probe_enable_partitions(probe, 1);
  if (blkid_do_fullprobe(probe) >= 0) {
    if (blkid_partlist list = blkid_probe_get_partitions(probe)) {
      for (int i = 0; i < blkid_partlist_numof_partitions(list); ++i) {
        blkid_partition part = blkid_partlist_get_partition(list, i);
        const char* uuid = blkid_partition_get_uuid(part);
        out[blkid_partition_get_partno(part)] = {
            uuid ? uuid : "", static_cast<uint64_t>(blkid_partition_get_start(part)) * 512,
            static_cast<uint64_t>(blkid_partition_get_size(part)) * 512};
      }
    }
  }
  blkid_free_probe(probe);
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> slices(const std::map<int, BlkidPartition>& parts) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [number, part] : parts) out.emplace_back(part.offset, part.size);
  return out;
}

// `sgdisk -v` finds nothing to say about the disk: no problem, warning or caution.
void expect_sgdisk_clean(const std::string& raw) {
  auto verify = test::run({"sgdisk", "-v", raw});
  EXPECT_THAT(verify.out, HasSubstr("No problems found"));
  EXPECT_THAT(verify.out + verify.err, ::testing::Not(HasSubstr("Warning")));
  EXPECT_THAT(verify.out + verify.err, ::testing::Not(HasSubstr("Caution")));
}

std::string convert_to_raw(const std::string& descriptor, const std::string& raw) {
  auto result = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", descriptor, raw});
  if (result.exit_code != 0) throw std::runtime_error("qemu-img convert: " + result.err);
  return raw;
}

TEST(ComposeGptRoot, EveryPartitionMountsWithExactlyItsLayersFiles) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "sgdisk", "losetup", "blockdev", "setfattr");
  test::TempDir dir;
  // Three layers, top first; middle deletes files (whiteouts), top makes a directory opaque.
  std::string top = dir / "top", middle = dir / "middle", base = dir / "base";
  test::make_tree(base, {{"etc/motd", "base motd\n"},
                         {"opt/app/version", "1\n"},
                         {"opt/app/legacy.conf", "old=1\n"},
                         {"usr/share/doc/app/README", "base readme\n"}});
  test::make_tree(middle, {{"opt/app/version", "2\n"}, {"opt/app/tool", "#!/bin/sh\n"}});
  ASSERT_EQ(::mknod((middle + "/opt/app/legacy.conf").c_str(), S_IFCHR | 0000, makedev(0, 0)), 0);
  ASSERT_EQ(::mknod((middle + "/etc-motd-whiteout").c_str(), S_IFCHR | 0000, makedev(0, 0)), 0);
  test::make_tree(top, {{"etc/motd", "top motd\n"}, {"usr/share/doc/", ""}});
  ASSERT_EQ(test::run({"setfattr", "-n", "trusted.overlay.opaque", "-v", "y", top + "/usr/share/doc"})
                .exit_code, 0);
  std::vector<std::string> trees{top, middle, base};
  ComposeOptions options;
  for (const auto& tree : trees) {
    test::make_erofs(tree, tree + ".erofs");
    options.layers.push_back({tree + ".erofs", {}});
  }
  options.output_dir = dir / "out";
  ComposeResult result = compose(options);

  std::string raw = convert_to_raw(dir / "out/disk.vmdk", dir / "disk.raw");
  expect_sgdisk_clean(raw);

  auto parts = blkid_partitions(raw);
  ASSERT_EQ(parts.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(parts[static_cast<int>(i + 1)].partuuid, result.layers[i].partuuid);
  }

  test::PartitionedDisk disk(raw, slices(parts));
  for (size_t i = 0; i < 3; ++i) {
    std::string partition = disk.partition(i + 1);
    if (disk.kernel_partitions()) {
      EXPECT_EQ(blkid_value(partition, "PARTUUID"), result.layers[i].partuuid);
    }
    EXPECT_EQ(blkid_value(partition, "TYPE"), "erofs");
    EXPECT_EQ(blkid_value(partition, "UUID"), result.layers[i].info.uuid_string);
    std::string mountpoint = dir / ("mnt" + std::to_string(i));
    test::ReadOnlyMount mount(partition, mountpoint, "erofs");
    EXPECT_EQ(test::describe_tree(mountpoint), test::describe_tree(trees[i]))
        << "partition " << i + 1 << " must hold exactly " << trees[i];
  }
  // The whiteouts and the opaque marker made it through.
  auto middle_tree = test::describe_tree(middle);
  EXPECT_THAT(middle_tree["opt/app/legacy.conf"], HasSubstr("chr 0:0"));
  EXPECT_THAT(test::describe_tree(top)["usr/share/doc"], HasSubstr("opaque=y"));
}

TEST(ComposeGptRoot, TwoHundredFiftyLayersComposeAndCheckClean) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "sgdisk", "losetup", "blockdev");
  test::TempDir dir;
  constexpr size_t kLayers = 250;
  ComposeOptions options;
  for (size_t i = 0; i < kLayers; ++i) {
    std::string tree = dir / ("l" + std::to_string(i));
    test::make_tree(tree, {{"layer", std::to_string(i) + "\n"}});
    test::make_erofs(tree, tree + ".erofs");
    options.layers.push_back({tree + ".erofs", {}});
  }
  options.output_dir = dir / "out";
  ComposeResult result = compose(options);
  ASSERT_EQ(result.layers.size(), kLayers);

  std::string raw = convert_to_raw(dir / "out/disk.vmdk", dir / "disk.raw");
  expect_sgdisk_clean(raw);
  auto parts = blkid_partitions(raw);
  ASSERT_EQ(parts.size(), kLayers);
  for (size_t i = 0; i < kLayers; ++i) {
    EXPECT_EQ(parts[static_cast<int>(i + 1)].partuuid, result.layers[i].partuuid);
  }

  // Every partition is a clean EROFS image holding its layer (fsck.erofs on each slice of
  // the raw disk), and a sample mounts.
  for (size_t i = 0; i < kLayers; ++i) {
    const auto& part = parts[static_cast<int>(i + 1)];
    std::string slice = dir / "slice.erofs";
    auto cut = test::run({"dd", "if=" + raw, "of=" + slice, "bs=512",
                          "skip=" + std::to_string(part.offset / 512),
                          "count=" + std::to_string(part.size / 512), "status=none"});
    ASSERT_EQ(cut.exit_code, 0);
    auto fsck = test::run({"fsck.erofs", slice});
    EXPECT_EQ(fsck.exit_code, 0) << "partition " << i + 1 << ": " << fsck.out << fsck.err;
  }
  test::PartitionedDisk disk(raw, slices(parts));
  for (size_t number : {size_t{1}, size_t{128}, size_t{129}, kLayers}) {
    std::string mountpoint = dir / ("mnt" + std::to_string(number));
    test::ReadOnlyMount mount(disk.partition(number), mountpoint, "erofs");
    EXPECT_EQ(test::read_file(mountpoint + "/layer"), std::to_string(number - 1) + "\n");
    if (disk.kernel_partitions()) {
      EXPECT_EQ(blkid_value(disk.partition(number), "PARTUUID"), result.layers[number - 1].partuuid);
    }
  }
}

}  // namespace
}  // namespace evmdk::host
