// Host → guest end to end on real devices: the host's compose() builds a GPT VMDK from real
// EROFS layers, qemu-img converts it to the raw bytes QEMU would present, that raw disk is
// attached as a partition-scanned loop device, and the guest driver mounts compose's own
// storage.json (with `serial:` sources pointed at the loop device, as the guest's virtio
// serial lookup would resolve them). Also: a PARTUUID computed by compose is enforced.
#include <gtest/gtest.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "guest_fixture.h"

namespace evmdk::test {
namespace {

namespace fs = std::filesystem;

struct Composed {
  std::vector<Storage> storages;
  std::string raw_image;
};

Composed compose_layers(const TempDir& temp, const std::vector<LayerSpec>& layers) {
  host::ComposeOptions options;
  options.mode = host::ComposeMode::Gpt;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string src = temp / fmt::format("c-src-{}", i);
    build_layer_dir(src, layers[i]);
    std::string image = temp / fmt::format("c-layer-{}.erofs", i);
    make_erofs(src, image, test_uuid(9, static_cast<unsigned>(i)));
    options.layers.push_back({image, {}});
  }
  options.output_dir = temp / "composed";
  auto result = host::compose(options);
  Composed out;
  out.storages = result.storages;
  out.raw_image = temp / "composed.raw";
  must(run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", result.disk_path, out.raw_image}),
       "qemu-img convert");
  return out;
}

TEST(GuestCompose, ComposedGptDiskMountsWithComposesOwnStorages) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "losetup", "setfattr");
  TempDir temp;
  LayerSpec top;
  top.files = {{"etc/motd", "composed top\n"}};
  top.whiteouts = {"etc/old"};
  LayerSpec base;
  base.files = {{"etc/motd", "base\n"}, {"etc/old", "gone\n"}, {"usr/bin/tool", "t\n"}};
  Composed composed = compose_layers(temp, {top, base});
  ASSERT_EQ(composed.storages.size(), 2u);
  AttachedImage disk(composed.raw_image, true);
  for (auto& storage : composed.storages) {
    ASSERT_EQ(storage.source.rfind("serial:", 0), 0u) << storage.source;
    storage.source = disk.device();
  }
  std::string base_dir = temp / "base", rootfs = temp / "rootfs";
  TeardownGuard guard(base_dir, "e2e", rootfs);
  guest::MountRequest request;
  request.storages = composed.storages;
  request.container_id = "e2e";
  request.rootfs = rootfs;
  request.base_dir = base_dir;
  guest::mount_rootfs(request);
  EXPECT_EQ(read_file(rootfs + "/etc/motd"), "composed top\n");
  EXPECT_EQ(read_file(rootfs + "/usr/bin/tool"), "t\n");
  EXPECT_FALSE(fs::exists(rootfs + "/etc/old"));
  teardown_and_expect_nothing_left("e2e", base_dir, rootfs);

  // Swap the two lowers' partition numbers: partition 1 no longer holds what the storage
  // says, and compose's PARTUUID catches it.
  auto swapped = composed.storages;
  for (auto& storage : swapped) {
    for (auto& option : storage.options) {
      if (option == "X-kata.partition-number=1") option = "X-kata.partition-number=2";
      else if (option == "X-kata.partition-number=2") option = "X-kata.partition-number=1";
    }
  }
  request.storages = swapped;
  try {
    guest::mount_rootfs(request);
    ADD_FAILURE() << "swapped partitions were mounted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("PARTUUID mismatch"), std::string::npos) << error.what();
  }
  EXPECT_TRUE(mount_points_under(base_dir).empty());
}

}  // namespace
}  // namespace evmdk::test
