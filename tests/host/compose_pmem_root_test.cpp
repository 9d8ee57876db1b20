// `compose --attach pmem` and `hook --attach pmem` on a loop-mounted XFS (reflink=1): the
// padded disk.img is what a user gets by hand from the VMDK compose writes for the same layers
// (`qemu-img convert` + `truncate` to the next 2 MiB + `sgdisk -e`), byte for byte, every layer
// shared by reflink; `sgdisk -v` finds no problem; a flat disk is the converted disk plus zeros;
// the hook writes the pmem entries and its cleanup removes the image; on ext4 (no reflink) the
// pmem compose is refused naming the layer and --allow-copy, leaving nothing.
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "containerd_mounts.h"
#include "evmdk/host/compose/gpt.h"
#include "volume_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kTwoMiB = 2 * kMiB;

json read_json(const std::string& path) {
  return json::parse(test::read_bytes(path, 0, fs::file_size(path)));
}

std::optional<std::string> missing_pmem_prerequisites() {
  if (auto why = missing_prerequisites()) return why;
  return test::missing_tools({"sgdisk", "truncate"});
}

std::vector<std::string> make_layers(const std::string& dir) {
  std::vector<std::string> out;
  for (int i = 0; i < 3; ++i) {
    std::string name = "layer" + std::to_string(i);
    test::make_layer(dir, name, "11111111-2222-4333-8444-55555555570" + std::to_string(i),
                     std::string(static_cast<size_t>(i) * 7000 + 100, 'a' + static_cast<char>(i)));
    out.push_back(dir + "/" + name + ".erofs");
  }
  return out;
}

test::CommandResult compose(const std::vector<std::string>& args,
                            const std::vector<std::string>& layers, const std::string& out) {
  std::vector<std::string> all{"compose"};
  all.insert(all.end(), args.begin(), args.end());
  all.insert(all.end(), {"-o", out});
  all.insert(all.end(), layers.begin(), layers.end());
  return test::cli(all);
}

// The by-hand pipeline: the VMDK as raw, padded to `size` and, for a GPT disk, `sgdisk -e` (the
// backup GPT moved to the new end). Two differences are sgdisk's, not the disk's: it leaves the
// old backup where it was (compose never wrote one there: those sectors are zeroed in the
// reference and must be zero in ours), and it rewrites the protective MBR's ending CHS from
// 0xFFFFFF (what compose writes on every disk, blk or pmem) to a computed CHS (the kernel and
// sgdisk -v use the LBA fields only), so the reference gets compose's 0xFFFFFF back.
std::string by_hand(const std::string& vmdk, uint64_t size, bool gpt, const std::string& path) {
  auto convert = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, path});
  EXPECT_EQ(convert.exit_code, 0) << convert.err;
  uint64_t converted = fs::file_size(path);
  EXPECT_EQ(test::run({"truncate", "-s", std::to_string(size), path}).exit_code, 0);
  if (gpt) {
    auto moved = test::run({"sgdisk", "-e", path});
    EXPECT_EQ(moved.exit_code, 0) << moved.out << moved.err;
    uint64_t tail = gpt::tail_sectors(gpt::kMinEntries) * 512;
    test::write_bytes(path, converted - tail, std::string(tail, '\0'));
    test::write_bytes(path, 446 + 5, std::string(3, '\xff'));  // partition 1's ending CHS
  }
  return path;
}

void expect_sgdisk_clean(const std::string& image) {
  auto verify = test::run({"sgdisk", "-v", image});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("No problems found")) << verify.out;
}

TEST(ComposePmemRoot, GptDiskIsTheConvertedVmdkPaddedWithSgdiskE) {
  EVMDK_REQUIRE(missing_pmem_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto layers = make_layers(volume.path());
  auto vmdk = compose({"--mode", "gpt"}, layers, volume / "vmdk");
  ASSERT_EQ(vmdk.exit_code, 0) << vmdk.err;
  // --attach pmem alone: raw implied, nothing copied (the XFS shares every layer).
  auto pmem = compose({"--mode", "gpt", "--attach", "pmem", "--json"}, layers, volume / "pmem");
  ASSERT_EQ(pmem.exit_code, 0) << pmem.err;
  std::string image = volume / "pmem/disk.img";
  uint64_t size = fs::file_size(image);
  EXPECT_EQ(size % kTwoMiB, 0u);
  json layout = json::parse(pmem.out);
  EXPECT_EQ(layout["attach"], "pmem");
  EXPECT_EQ(layout["disk_sectors"], size / 512);
  EXPECT_EQ(layout["raw_image"]["reflinked"], true) << layout["raw_image"]["reflink_problem"];
  EXPECT_EQ(layout["raw_image"]["size"], size);
  uint64_t vmdk_sectors = read_json(volume / "vmdk/layout.json")["disk_sectors"];
  EXPECT_LT(vmdk_sectors * 512, size);  // the three small layers need padding

  std::string reference = by_hand(volume / "vmdk/disk.vmdk", size, true, dir / "by-hand.raw");
  EXPECT_EQ(compare_files(image, reference), "");
  expect_sgdisk_clean(image);
  // The qemu.json a VMM reads: the device is the whole padded image.
  json qemu = read_json(volume / "pmem/qemu.json");
  EXPECT_EQ(qemu["pmem"]["size"], size);
  EXPECT_EQ(qemu["pmem"]["memory_backend"]["mem-path"], image);
}

TEST(ComposePmemRoot, FlatDiskIsTheConvertedVmdkPadded) {
  EVMDK_REQUIRE(missing_pmem_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto fixture = test::make_multi_device(volume.path());
  std::vector<std::string> inputs{fixture.fsmeta, fixture.blob};
  ASSERT_EQ(compose({"--mode", "flat"}, inputs, volume / "vmdk").exit_code, 0);
  auto pmem = compose({"--mode", "flat", "--attach", "pmem", "--format", "auto"}, inputs,
                      volume / "pmem");
  ASSERT_EQ(pmem.exit_code, 0) << pmem.err;
  std::string image = volume / "pmem/disk.img";
  uint64_t size = fs::file_size(image);
  EXPECT_EQ(size % kTwoMiB, 0u);
  std::string reference = by_hand(volume / "vmdk/disk.vmdk", size, false, dir / "by-hand.raw");
  EXPECT_EQ(compare_files(image, reference), "");
  json storages = read_json(volume / "pmem/storage.json");
  ASSERT_EQ(storages.size(), 1u);
  EXPECT_EQ(storages[0]["driver"], "nvdimm");
  EXPECT_EQ(storages[0]["source"], "pmem-scan");
}

// One layer: disk.img is the layer, shared whole, and zeros to the next 2 MiB.
TEST(ComposePmemRoot, OneLayerIsTheSharedLayerPadded) {
  EVMDK_REQUIRE(missing_pmem_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto layers = make_layers(volume.path());
  auto pmem = compose({"--attach", "pmem", "--json"}, {layers[2]}, volume / "pmem");
  ASSERT_EQ(pmem.exit_code, 0) << pmem.err;
  json layout = json::parse(pmem.out);
  EXPECT_EQ(layout["mode"], "raw");
  EXPECT_EQ(layout["raw_image"]["reflinked"], true) << layout["raw_image"]["reflink_problem"];
  std::string image = volume / "pmem/disk.img";
  EXPECT_EQ(fs::file_size(image), kTwoMiB);
  std::string reference = dir / "by-hand.raw";
  fs::copy_file(layers[2], reference);
  ASSERT_EQ(test::run({"truncate", "-s", std::to_string(kTwoMiB), reference}).exit_code, 0);
  EXPECT_EQ(compare_files(image, reference), "");
}

// hook --attach pmem on the snapshotter's XFS: raw images implied and shared, the lower disk
// entry carries the pmem attach arguments, `sgdisk -v` is clean, cleanup removes disk.img.
TEST(ComposePmemRoot, HookWritesThePmemEntriesAndCleanupRemovesTheImage) {
  EVMDK_REQUIRE(missing_pmem_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto layers = make_layers(volume.path());
  fs::create_directories(volume / "snap");
  std::string list = volume / "mounts.json";
  std::ofstream(list) << test::containerd_block_mode_list(volume / "snap/rw.img", 8388608,
                                                          {layers[0], layers[1], layers[2]})
                             .dump();
  auto hooked = test::cli({"hook", "--id", "p1", "--state-dir", volume / "state", "--mounts", list,
                           "--attach", "pmem", "--dax-fallback", "warn"});
  ASSERT_EQ(hooked.exit_code, 0) << hooked.err;
  json output = json::parse(hooked.out);
  const json* lowers = nullptr;
  for (const auto& disk : output["disks"]) {
    if (disk["role"] == "lowers") lowers = &disk;
  }
  ASSERT_NE(lowers, nullptr) << output.dump(2);
  std::string image = (*lowers)["path"];
  EXPECT_EQ(image, volume / "state/p1/lowers/disk.img");
  EXPECT_EQ((*lowers)["attach"], "pmem");
  EXPECT_EQ((*lowers)["format"], "raw");
  EXPECT_EQ(fs::file_size(image) % kTwoMiB, 0u);
  expect_sgdisk_clean(image);
  const json& pmem = (*lowers)["qemu"]["pmem"];
  EXPECT_EQ(pmem["maxmem_bytes"], fs::file_size(image));
  EXPECT_EQ(pmem["args"][1],
            fmt::format("memory-backend-file,id={0}-mem,share=on,readonly=on,mem-path={1},size={2}",
                        (*lowers)["serial"].get<std::string>(), image, fs::file_size(image)));
  EXPECT_EQ((*lowers)["qemu"]["cloud_hypervisor"]["pmem"], "file=" + image + ",discard_writes=on");
  EXPECT_EQ(read_json(volume / "state/p1/lowers/layout.json")["raw_image"]["reflinked"], true);
  size_t nvdimm = 0;
  for (const auto& storage : output["storages"]) {
    if (storage["driver"] == "nvdimm") {
      ++nvdimm;
      EXPECT_THAT(storage["options"].dump(), AllOf(HasSubstr("X-erofs-vmdk.dax=always"),
                                                   HasSubstr("X-erofs-vmdk.dax-fallback=warn")));
    }
  }
  EXPECT_EQ(nvdimm, 3u);

  auto cleanup = test::cli({"hook", "cleanup", "--id", "p1", "--state-dir", volume / "state"});
  ASSERT_EQ(cleanup.exit_code, 0) << cleanup.err;
  EXPECT_FALSE(fs::exists(image));
  EXPECT_FALSE(fs::exists(volume / "state/p1"));
  for (const auto& layer : layers) EXPECT_TRUE(fs::exists(layer));
}

// ext4 cannot share blocks: --attach pmem (raw) is refused, naming the layer and --allow-copy.
TEST(ComposePmemRoot, Ext4IsRefusedUnlessCopyingIsAllowed) {
  EVMDK_REQUIRE(missing_pmem_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "ext4", 128 * kMiB);
  auto layers = make_layers(volume.path());
  auto refused = compose({"--attach", "pmem", "--format", "auto"}, layers, volume / "out");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, AllOf(HasSubstr("--attach pmem needs a raw image"),
                                 HasSubstr("layer 0"), HasSubstr("--allow-copy")));
  EXPECT_FALSE(fs::exists(volume / "out"));
  auto copied = compose({"--attach", "pmem", "--allow-copy"}, layers, volume / "out");
  ASSERT_EQ(copied.exit_code, 0) << copied.err;
  expect_sgdisk_clean(volume / "out/disk.img");
}

}  // namespace
}  // namespace evmdk::host
