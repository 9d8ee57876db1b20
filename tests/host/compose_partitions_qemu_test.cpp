// The layer limit, measured where it matters: the guest kernel (Debian 6.1 from /boot) under
// QEMU sees every partition of a 255-layer composed disk — the most compose allows, because
// Linux reads no partition past number 255 (a 300-entry GPT shows vda1..vda255 only) — with
// each partition's GPT name (layer-<index>, so partition N is layer N-1) and the disk's
// deterministic virtio serial, attached with the exact -drive/-device arguments of qemu.json.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/gpt.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string guest_kernel() {
  for (const auto& entry : fs::directory_iterator("/boot")) {
    if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) return entry.path();
  }
  return {};
}

// A busybox initramfs that loads virtio-blk, prints the partitions, serial and partition
// names of vda, and powers off.
std::string make_initramfs(const test::TempDir& dir, const std::string& kernel) {
  std::string version = fs::path(kernel).filename().string().substr(std::string("vmlinuz-").size());
  std::string root = dir / "initramfs";
  fs::create_directories(root + "/bin");
  fs::create_directories(root + "/mods");
  for (const char* d : {"proc", "sys", "dev"}) fs::create_directories(root + "/" + d);
  std::string busybox = fs::exists("/bin/busybox") ? "/bin/busybox" : "/usr/bin/busybox";
  fs::copy_file(busybox, root + "/bin/busybox");
  std::string modules = "/lib/modules/" + version + "/kernel/drivers/";
  std::string load;
  for (const char* m : {"virtio/virtio_ring", "virtio/virtio", "virtio/virtio_pci_modern_dev",
                        "virtio/virtio_pci_legacy_dev", "virtio/virtio_pci", "block/virtio_blk"}) {
    std::string name = fs::path(m).filename();
    for (const char* ext : {".ko", ".ko.xz"}) {
      if (fs::exists(modules + m + ext)) {
        fs::copy_file(modules + m + ext, root + "/mods/" + name + ext);
        load += std::string(ext) == ".ko" ? "insmod /mods/" + name + ".ko\n"
                                          : "xz -d /mods/" + name + ".ko.xz; insmod /mods/" + name + ".ko\n";
      }
    }
  }
  test::write_file(root + "/init",
                   "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n"
                   "mount -t proc proc /proc\nmount -t sysfs sys /sys\n" + load +
                   "for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/block/vda ] && break; sleep 0.5; done\n"
                   "sleep 1\n"
                   "echo \"PARTCOUNT $(grep -c 'vda[0-9]' /proc/partitions)\"\n"
                   "echo \"SERIAL $(cat /sys/block/vda/serial)\"\n"
                   "for n in 1 2 128 129 254 255; do echo \"PART $n $(grep PARTNAME /sys/block/vda/vda$n/uevent)\"; done\n"
                   "poweroff -f\n");
  fs::permissions(root + "/init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
  std::string image = dir / "initramfs.cpio";
  auto packed = test::sh("cd '" + root + "' && find . | cpio -o -H newc > '" + image + "' 2>/dev/null");
  if (packed.exit_code != 0) throw std::runtime_error("cpio failed: " + packed.err);
  return image;
}

TEST(ComposePartitionsQemu, GuestKernelSeesAll255PartitionsAndTheSerial) {
  EVMDK_REQUIRE_QEMU();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  constexpr size_t kLayers = gpt::kMaxPartitions;
  ComposeOptions options;
  for (size_t i = 0; i < kLayers; ++i) {
    std::string tree = dir / ("l" + std::to_string(i));
    test::make_tree(tree, {{"n", std::to_string(i)}});
    test::make_erofs(tree, tree + ".erofs");
    options.layers.push_back({tree + ".erofs", {}});
  }
  options.output_dir = dir / "out";
  ComposeResult result = compose(options);
  auto qemu = nlohmann::json::parse(test::read_file(dir / "out/qemu.json"));

  std::string kernel = guest_kernel();
  std::vector<std::string> argv{"timeout", "300", "qemu-system-x86_64", "-accel", "tcg", "-m", "256",
                                "-nographic", "-no-reboot", "-kernel", kernel, "-initrd",
                                make_initramfs(dir, kernel), "-append", "console=ttyS0 quiet panic=-1"};
  for (const auto& arg : qemu["drive_args"]) argv.push_back(arg.get<std::string>());
  auto boot = test::run(argv);
  ASSERT_THAT(boot.out, HasSubstr("PARTCOUNT")) << boot.out << boot.err;
  EXPECT_THAT(boot.out, HasSubstr("PARTCOUNT 255"));
  EXPECT_THAT(boot.out, HasSubstr("SERIAL " + result.serial));
  for (int n : {1, 2, 128, 129, 254, 255}) {
    EXPECT_THAT(boot.out, HasSubstr("PART " + std::to_string(n) + " PARTNAME=layer-" +
                                    std::to_string(n - 1)));
  }
}

}  // namespace
}  // namespace evmdk::host
