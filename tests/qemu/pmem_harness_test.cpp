// The harness's virtio-pmem pieces without booting anything: the -m value and the
// memory-backend-file / virtio-pmem-pci arguments (maxmem = RAM + the sum of the device sizes,
// which QEMU 7.2 and 10 require exactly), a run without pmem devices keeping the plain -m of
// every other scenario, and the extra modules a pmem guest loads (dependencies from
// modules.dep, nothing the base initramfs already loads, built-in ones skipped).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "harness/qemu_harness.h"
#include "test_support.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;

TEST(PmemHarness, NoDevicesKeepThePlainMemoryArgument) {
  auto args = pmem_attach_args(512, {});
  EXPECT_EQ(args.memory, "512");
  EXPECT_TRUE(args.args.empty());
}

TEST(PmemHarness, MaxmemIsRamPlusTheDeviceSizes) {
  test::TempDir temp;
  std::string first = temp / "a,b.img", second = temp / "second.img";
  test::write_file(first, std::string(8u << 20, '\0'));
  test::write_file(second, "");
  // An explicit size wins over the file's (QEMU itself refuses a size the file does not have).
  auto args = pmem_attach_args(768, {{first, 0, "0x10"}, {second, 6u << 20, ""}});
  EXPECT_EQ(args.memory, "768M,slots=2,maxmem=782M");
  std::vector<std::string> expected{
      "-object",
      "memory-backend-file,id=pmem0-mem,share=on,readonly=on,mem-path=" + temp.path() +
          "/a,,b.img,size=8388608",
      "-device",
      "virtio-pmem-pci,memdev=pmem0-mem,id=pmem0,addr=0x10",
      "-object",
      "memory-backend-file,id=pmem1-mem,share=on,readonly=on,mem-path=" + second + ",size=6291456",
      "-device",
      "virtio-pmem-pci,memdev=pmem1-mem,id=pmem1"};
  EXPECT_EQ(args.args, expected);
}

// compose's qemu.json "pmem" "args" go to QEMU as they are; their size still counts.
TEST(PmemHarness, ArgumentsGivenAsTheyAreStillCountTowardMaxmem) {
  std::vector<std::string> composed{"-object", "memory-backend-file,id=evmdk-x-mem,size=4194304",
                                    "-device", "virtio-pmem-pci,memdev=evmdk-x-mem,id=evmdk-x"};
  PmemDevice device{"/nowhere/disk.img", 4u << 20, ""};
  device.args = composed;
  auto args = pmem_attach_args(512, {device});
  EXPECT_EQ(args.memory, "512M,slots=1,maxmem=516M");
  EXPECT_EQ(args.args, composed);
  device.size = 0;
  EXPECT_THROW(pmem_attach_args(512, {device}), HarnessError) << "args without size";
}

TEST(PmemHarness, SizesBelowAMiBRoundMaxmemUp) {
  test::TempDir temp;
  std::string image = temp / "odd.img";
  test::write_file(image, std::string(3u << 20, '\0'));
  auto args = pmem_attach_args(512, {{image, 0, ""}, {image, (1u << 20) + 4096, ""}});
  EXPECT_EQ(args.memory, "512M,slots=2,maxmem=517M");  // 3 MiB + 1 MiB + 4 KiB -> 5 MiB
}

TEST(PmemHarness, MissingOrEmptyDeviceFileIsNamed) {
  test::TempDir temp;
  try {
    pmem_attach_args(512, {{temp / "missing.img", 0, ""}});
    FAIL() << "a missing pmem file was accepted";
  } catch (const HarnessError& error) {
    EXPECT_NE(std::string(error.what()).find("missing.img"), std::string::npos) << error.what();
  }
  test::write_file(temp / "empty.img", "");
  EXPECT_THROW(pmem_attach_args(512, {{temp / "empty.img", 0, ""}}), HarnessError);
}

// A lane-like modules directory: virtio and virtio_ring built in (as on 6.12), the nvdimm
// modules as .ko.xz with their real dependency shape.
TEST(PmemHarness, ExtraModulesAreThePmemStackBeyondTheBase) {
  test::TempDir temp;
  std::string dir = temp / "modules";
  std::string dep;
  for (const auto& name : guest_module_names()) {
    if (name == "virtio" || name == "virtio_ring") continue;
    dep += "kernel/base/" + name + ".ko:\n";
  }
  dep +=
      "kernel/drivers/nvdimm/libnvdimm.ko.xz:\n"
      "kernel/drivers/nvdimm/nd_btt.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz\n"
      "kernel/drivers/nvdimm/nd_pmem.ko.xz: kernel/drivers/nvdimm/nd_btt.ko.xz "
      "kernel/drivers/nvdimm/libnvdimm.ko.xz\n"
      "kernel/drivers/nvdimm/nd_virtio.ko.xz:\n"
      "kernel/drivers/nvdimm/virtio_pmem.ko.xz: kernel/drivers/nvdimm/nd_virtio.ko.xz "
      "kernel/drivers/nvdimm/libnvdimm.ko.xz\n";
  test::make_tree(dir,
                  {{"modules.dep", dep},
                   {"modules.builtin",
                    "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n"}});
  auto extra = detail::modules_beyond_base(dir, pmem_module_names());
  std::vector<std::string> expected{
      "kernel/drivers/nvdimm/libnvdimm.ko.xz", "kernel/drivers/nvdimm/nd_btt.ko.xz",
      "kernel/drivers/nvdimm/nd_pmem.ko.xz", "kernel/drivers/nvdimm/nd_virtio.ko.xz",
      "kernel/drivers/nvdimm/virtio_pmem.ko.xz"};
  EXPECT_EQ(extra, expected);
  // Asking for a base module adds nothing: the base initramfs loads it already.
  EXPECT_TRUE(detail::modules_beyond_base(dir, {"erofs"}).empty());
}

}  // namespace
}  // namespace evmdk::qemu
