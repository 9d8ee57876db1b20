// `hook --disk-format raw --allow-copy`: the gpt lower disk is a disk.img whose disk entry
// carries the raw attach arguments (QEMU format=raw with serial and id, Cloud Hypervisor,
// Firecracker, libkrun), the hook state records it, `verify` passes on it, and `hook cleanup`
// removes it while the layers keep their bytes (verify_raw_root_test: their blocks, on XFS).
#include <gmock/gmock.h>

#include <filesystem>

#include "containerd_mounts.h"
#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

class HookRaw : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4");
    for (int n = 1; n <= 2; ++n) {
      std::string dir = fmt::format("{}/snapshots/{}", work_.path(), n);
      test::make_tree(dir + "/tree", {{fmt::format("etc/layer{}", n), std::string(5000, 'x')}});
      test::make_erofs(dir + "/tree", dir + "/layer.erofs",
                       fmt::format("{0}{0}{0}{0}{0}{0}{0}{0}-0000-4000-8000-000000000000", n));
    }
    fs::create_directories(work_ / "snapshots/9");
  }
  std::string layer(int n) const {
    return fmt::format("{}/snapshots/{}/layer.erofs", work_.path(), n);
  }
  HookRequest request(const std::string& id) const {
    HookRequest r;
    r.id = id;
    r.state_dir = work_ / "state";
    r.mounts =
        parse_mount_list_text(test::containerd_block_mode_list(work_ / "snapshots/9/rwlayer.img",
                                                               8388608, {layer(2), layer(1)})
                                  .dump(),
                              "test");
    r.disk_format = DiskFormat::Raw;
    r.allow_copy = true;
    return r;
  }
  test::TempDir work_;
};

TEST_F(HookRaw, LowerDiskIsARawImageWithItsAttachArgumentsAndCleanupRemovesIt) {
  std::string layer1 = test::read_bytes(layer(1), 0, fs::file_size(layer(1)));
  std::string layer2 = test::read_bytes(layer(2), 0, fs::file_size(layer(2)));
  json output = run_hook(request("c1"));
  const json* lowers = nullptr;
  for (const auto& disk : output["disks"]) {
    if (disk["role"] == "lowers") lowers = &disk;
  }
  ASSERT_NE(lowers, nullptr) << output.dump(2);
  std::string image = (*lowers)["path"];
  std::string serial = (*lowers)["serial"];
  EXPECT_EQ(image, work_ / "state/c1/lowers/disk.img");
  EXPECT_TRUE(fs::exists(image));
  EXPECT_FALSE(fs::exists(work_ / "state/c1/lowers/disk.vmdk"));
  EXPECT_EQ((*lowers)["format"], "raw");
  const json& qemu = (*lowers)["qemu"];
  EXPECT_THAT(qemu["drive_args"][1].get<std::string>(), HasSubstr("file=" + image + ",format=raw"));
  EXPECT_EQ(qemu["drive_args"][3],
            "virtio-blk-pci,drive=" + serial + ",serial=" + serial + ",id=" + serial);
  EXPECT_EQ(qemu["cloud-hypervisor"]["args"][1],
            "path=" + image + ",readonly=on,serial=" + serial + ",id=" + serial);
  EXPECT_EQ(qemu["firecracker"]["is_read_only"], true);
  EXPECT_EQ(qemu["libkrun"]["path"], image);
  std::string state = test::read_bytes(work_ / "state/c1/hook-state.json", 0,
                                       fs::file_size(work_ / "state/c1/hook-state.json"));
  EXPECT_THAT(state, HasSubstr("lowers/disk.img"));
  // verify reads the image as the guest will, against the layers it was assembled from.
  auto verified = test::cli({"verify", "--quiet", work_ / "state/c1/lowers"});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;

  auto report = cleanup_hook("c1", work_ / "state");
  EXPECT_THAT(report.left, ::testing::IsEmpty());
  EXPECT_THAT(report.removed, ::testing::Contains(image));
  EXPECT_FALSE(fs::exists(work_ / "state/c1"));
  EXPECT_EQ(test::read_bytes(layer(1), 0, fs::file_size(layer(1))), layer1);
  EXPECT_EQ(test::read_bytes(layer(2), 0, fs::file_size(layer(2))), layer2);
}

TEST_F(HookRaw, RawWithoutAllowCopyIsRefusedWhereNothingCanBeSharedOrWorks) {
  HookRequest r = request("c2");
  r.allow_copy = false;
  try {
    run_hook(r);
    EXPECT_TRUE(fs::exists(work_ / "state/c2/lowers/disk.img"));  // a reflink filesystem
  } catch (const Error& error) {
    EXPECT_THAT(std::string(error.what()), HasSubstr("--allow-copy"));
    EXPECT_FALSE(fs::exists(work_ / "state/c2"));
  }
}

TEST_F(HookRaw, CliTakesDiskFormat) {
  auto bad = test::cli({"hook", "--id", "c3", "--state-dir", work_ / "state", "--disk-format",
                        "qcow2", "--mounts", "-"},
                       "[]");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--disk-format"));
}

}  // namespace
}  // namespace evmdk::host
