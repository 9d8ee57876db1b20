// `compose --attach pmem` and `hook --attach pmem` as a runtime uses them: a raw disk.img padded
// to 2 MiB with the backup GPT at the new end, qemu.json's virtio-pmem arguments and the maxmem
// they take, pmem storages with the DAX markers the guest decodes, and every refusal (a VMDK,
// dm-verity, a partition or blob off 4 KiB, bad option values), each naming what is wrong and
// leaving nothing behind. The copies here run anywhere (--allow-copy); the reflinked image is
// compose_pmem_root_test.cpp.
#include <fcntl.h>
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "containerd_mounts.h"
#include "evmdk/contract/markers.h"
#include "evmdk/contract/pmem.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/disk_id.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/pmem_attach.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/unique_fd.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kTwoMiB = 2u << 20;

json read_json(const std::string& path) {
  return json::parse(test::read_bytes(path, 0, fs::file_size(path)));
}

class ComposePmemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-0000000000e1",
                     std::string(9000, 't'));
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000e2");
  }
  ComposeOptions pmem_options(const std::string& out, std::vector<std::string> layers = {}) {
    ComposeOptions options;
    if (layers.empty()) layers = {dir / "top.erofs", dir / "base.erofs"};
    for (const auto& layer : layers) options.layers.push_back({layer, {}});
    options.mode = layers.size() == 1 ? ComposeMode::Raw : ComposeMode::Gpt;
    options.output_dir = out;
    options.format = DiskFormat::Raw;
    options.allow_copy = true;
    options.pmem.attach = DiskAttach::Pmem;
    return options;
  }
  std::string refusal(const ComposeOptions& options) {
    std::string message = "no error";
    try {
      compose(options);
    } catch (const Error& error) {
      message = error.what();
    }
    EXPECT_FALSE(fs::exists(options.output_dir)) << "a refused compose wrote output";
    return message;
  }
  test::TempDir dir;
};

// The padded GPT disk: a 2 MiB multiple, the backup GPT at its very end (read_table checks the
// backup against the primary), the partitions where the blk disk has them; layout.json says so.
TEST_F(ComposePmemTest, GptDiskIsPaddedToTwoMiBWithTheBackupGptAtTheEnd) {
  ComposeOptions blk = pmem_options(dir / "blk");
  blk.pmem.attach = DiskAttach::Blk;
  ComposeResult plain = compose(blk);
  ComposeResult pmem = compose(pmem_options(dir / "pmem"));
  std::string image = dir / "pmem/disk.img";
  uint64_t size = fs::file_size(image);
  EXPECT_EQ(size % kTwoMiB, 0u);
  EXPECT_GE(size, plain.disk_sectors * 512);
  EXPECT_LT(size, plain.disk_sectors * 512 + kTwoMiB);
  EXPECT_EQ(pmem.disk_sectors * 512, size);

  UniqueFd fd = open_or_throw(image, O_RDONLY);
  gpt::Table table = gpt::read_table(fd.get(), image, /*check_backup=*/true);
  EXPECT_EQ(table.total_sectors, size / 512);
  ASSERT_EQ(table.partitions.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(table.partitions[i].first_lba, plain.layers[i].first_lba);
    EXPECT_EQ(gpt::format_guid(table.partitions[i].unique), plain.layers[i].partuuid);
  }
  // Every byte of a layer is on the disk at its partition.
  std::string top = test::read_bytes(dir / "top.erofs", 0, fs::file_size(dir / "top.erofs"));
  EXPECT_EQ(test::read_bytes(image, pmem.layers[0].first_lba * 512, top.size()), top);

  json layout = read_json(dir / "pmem/layout.json");
  EXPECT_EQ(layout["attach"], "pmem");
  EXPECT_EQ(layout["format"], "raw");
  EXPECT_EQ(layout["disk_sectors"], size / 512);
  EXPECT_FALSE(read_json(dir / "blk/layout.json").contains("attach"));
}

// qemu.json: the memory-backend-file + virtio-pmem-pci pair as QMP objects and as command-line
// arguments, maxmem_bytes the device's size, Cloud Hypervisor's --pmem; the blk keys stay.
TEST_F(ComposePmemTest, QemuJsonHasThePmemArgumentsAndTheMaxmemTheyTake) {
  ComposeResult result = compose(pmem_options(dir / "out"));
  std::string image = dir / "out/disk.img";
  json qemu = read_json(dir / "out/qemu.json");
  EXPECT_EQ(qemu, result.qemu);
  const std::string serial = result.serial;
  const uint64_t size = fs::file_size(image);
  const json& pmem = qemu["pmem"];
  EXPECT_EQ(pmem["size"], size);
  EXPECT_EQ(pmem["maxmem_bytes"], size);
  EXPECT_EQ(pmem["memory_backend"], (json{{"qom-type", "memory-backend-file"},
                                          {"id", serial + "-mem"},
                                          {"mem-path", image},
                                          {"size", size},
                                          {"share", true},
                                          {"readonly", true}}));
  EXPECT_EQ(pmem["device_add"], (json{{"driver", "virtio-pmem-pci"},
                                      {"memdev", serial + "-mem"},
                                      {"id", serial}}));
  EXPECT_EQ(pmem["args"],
            (json{"-object",
                  fmt::format("memory-backend-file,id={}-mem,share=on,readonly=on,mem-path={},"
                              "size={}",
                              serial, image, size),
                  "-device", fmt::format("virtio-pmem-pci,memdev={}-mem,id={}", serial, serial)}));
  EXPECT_FALSE(pmem.contains("inherit_fd"));
  EXPECT_EQ(qemu["cloud_hypervisor"], (json{{"pmem", "file=" + image + ",discard_writes=on"}}));
  // The disk can still go over virtio-blk: the raw attach keys are all there.
  EXPECT_EQ(qemu["format"], "raw");
  EXPECT_EQ(qemu["blockdev-add"]["driver"], "raw");
}

// A path with a comma is escaped in -object (QEMU doubles it) and cannot be given to Cloud
// Hypervisor's --pmem at all.
TEST_F(ComposePmemTest, CommaInThePathIsEscapedForQemu) {
  std::string out = dir / "a,b";
  compose(pmem_options(out));
  json qemu = read_json(out + "/qemu.json");
  EXPECT_THAT(qemu["pmem"]["args"][1].get<std::string>(),
              HasSubstr("mem-path=" + dir.path() + "/a,,b/disk.img,size="));
  EXPECT_EQ(qemu["pmem"]["memory_backend"]["mem-path"], out + "/disk.img");
  EXPECT_FALSE(qemu.contains("cloud_hypervisor"));
}

// --fdset: QEMU maps the fd it inherited (memory-backend-file opens mem-path with open(2)).
TEST_F(ComposePmemTest, FdsetMapsTheInheritedFd) {
  ComposeOptions options = pmem_options(dir / "out");
  options.fdset = true;
  options.first_fdset_id = 5;
  compose(options);
  json pmem = read_json(dir / "out/qemu.json")["pmem"];
  EXPECT_EQ(pmem["memory_backend"]["mem-path"], "/proc/self/fd/5");
  EXPECT_THAT(pmem["args"][1].get<std::string>(), HasSubstr("mem-path=/proc/self/fd/5,"));
  EXPECT_EQ(pmem["inherit_fd"],
            (json{{"fd", 5}, {"path", dir / "out/disk.img"}, {"read-only", true}}));
  options.output_dir = dir / "low";
  options.first_fdset_id = 2;
  EXPECT_THAT(refusal(options), AllOf(HasSubstr("--first-fdset"), HasSubstr("3 or more")));
}

// Storages: driver nvdimm, found by scanning (or at the PCI address given), DAX asked for with
// the fallback rule; the guest's decoder reads them back.
TEST_F(ComposePmemTest, StoragesArePmemLowersWithTheDaxMarkers) {
  ComposeResult scan = compose(pmem_options(dir / "scan"));
  ASSERT_EQ(scan.storages.size(), 2u);
  for (const auto& storage : scan.storages) {
    EXPECT_EQ(storage.driver, "nvdimm");
    EXPECT_EQ(storage.source, "pmem-scan");
    EXPECT_EQ(contract::decode_pmem_source(storage.source), contract::PmemSource{});
    auto dax = contract::decode_dax_options(storage.options, "test");
    ASSERT_TRUE(dax.has_value());
    EXPECT_EQ(dax->fallback, contract::DaxFallback::Error);
    EXPECT_THAT(storage.options, Contains(AllOf(HasSubstr("X-erofs-vmdk.partuuid="))));
    EXPECT_THAT(storage.options, Contains("X-erofs-vmdk.dax=always"));
    EXPECT_THAT(storage.options, Contains("X-erofs-vmdk.dax-fallback=error"));
  }
  EXPECT_EQ(to_json(scan.storages), read_json(dir / "scan/storage.json"));

  ComposeOptions placed = pmem_options(dir / "pci");
  placed.pmem.dax_fallback = contract::DaxFallback::Warn;
  placed.pmem.pci_address = "0000:00:10.0";
  ComposeResult pci = compose(placed);
  for (const auto& storage : pci.storages) {
    EXPECT_EQ(storage.source, "pmem-pci:0000:00:10.0");
    EXPECT_THAT(storage.options, Contains("X-erofs-vmdk.dax-fallback=warn"));
  }
  EXPECT_THAT(pci.qemu["pmem"]["args"][3].get<std::string>(), HasSubstr(",addr=10.0"));
  EXPECT_EQ(pci.qemu["pmem"]["device_add"]["addr"], "10.0");
}

// One layer: disk.img is the layer and zeros up to 2 MiB; the guest finds it by EROFS UUID.
TEST_F(ComposePmemTest, OneLayerIsThePaddedLayer) {
  ComposeResult result = compose(pmem_options(dir / "out", {dir / "top.erofs"}));
  EXPECT_EQ(result.mode, ComposeMode::Raw);
  EXPECT_EQ(result.disk_path, dir / "out/disk.img");
  std::string layer = test::read_bytes(dir / "top.erofs", 0, fs::file_size(dir / "top.erofs"));
  uint64_t size = fs::file_size(dir / "out/disk.img");
  EXPECT_EQ(size, kTwoMiB);
  std::string disk = test::read_bytes(dir / "out/disk.img", 0, size);
  EXPECT_EQ(disk.substr(0, layer.size()), layer);
  EXPECT_EQ(disk.find_first_not_of('\0', layer.size()), std::string::npos);
  ASSERT_EQ(result.storages.size(), 1u);
  EXPECT_EQ(result.storages[0].source, "pmem-scan");
  EXPECT_THAT(result.storages[0].options,
              Contains("X-erofs-vmdk.erofs-uuid=00000000-0000-4000-8000-0000000000e1"));
  EXPECT_THAT(result.storages[0].options, Not(Contains(HasSubstr("partuuid"))));
}

// compose warns, naming the layer and the mkfs.erofs option, when DAX would mostly not serve a
// layer (files with inlined tails go wholly through the page cache); a layer built with
// -Enoinline_data gets no warning. The disk is written either way.
TEST_F(ComposePmemTest, LayerDaxWouldMostlyNotServeIsWarnedAbout) {
  test::make_tree(dir / "dax.d", {{"data/big", std::string(3 * 4096 + 100, 'x')},
                                  {"etc/conf", std::string(5000, 'c')}});
  test::make_erofs(dir / "dax.d", dir / "dax.erofs", "00000000-0000-4000-8000-0000000000e3",
                   {"-Enoinline_data"});
  test::make_erofs(dir / "dax.d", dir / "tails.erofs", "00000000-0000-4000-8000-0000000000e4");
  ComposeResult good = compose(pmem_options(dir / "good", {dir / "dax.erofs"}));
  EXPECT_TRUE(good.warnings.empty()) << good.warnings.front();
  ComposeResult tails = compose(
      pmem_options(dir / "tails", {dir / "dax.erofs", dir / "tails.erofs"}));
  ASSERT_EQ(tails.warnings.size(), 1u);
  EXPECT_THAT(tails.warnings[0],
              AllOf(HasSubstr("layer 1"), HasSubstr("tails.erofs"), HasSubstr("-Enoinline_data")));
  EXPECT_TRUE(fs::exists(dir / "tails/disk.img"));
  // Without pmem nothing is analysed or warned about.
  ComposeOptions blk = pmem_options(dir / "blk", {dir / "tails.erofs"});
  blk.pmem.attach = DiskAttach::Blk;
  EXPECT_TRUE(compose(blk).warnings.empty());
}

// A pmem disk is found by scanning pmem devices, never by a GPT disk GUID.
TEST_F(ComposePmemTest, DiskIdGptGuidIsRefused) {
  ComposeOptions options = pmem_options(dir / "out");
  options.disk_id = DiskId::GptGuid;
  EXPECT_THAT(refusal(options), AllOf(HasSubstr("--attach pmem"), HasSubstr("--disk-id gpt-guid")));
}

TEST_F(ComposePmemTest, VmdkFormatIsRefused) {
  ComposeOptions options = pmem_options(dir / "out");
  options.format = DiskFormat::Vmdk;
  EXPECT_THAT(refusal(options), AllOf(HasSubstr("--attach pmem"), HasSubstr("VMDK")));
}

// dm-verity asked for by a layer (its options) is refused naming the layer and saying why.
TEST_F(ComposePmemTest, DmVerityIsRefused) {
  ComposeOptions options = pmem_options(dir / "out");
  options.layers[1].extra_options.push_back("X-kata.dmverity-enabled=true");
  EXPECT_THAT(refusal(options), AllOf(HasSubstr("layer 1"), HasSubstr(dir / "base.erofs"),
                                      HasSubstr(kDaxVerityConflict)));
}

// A flat disk whose blob or fsmeta does not start and end on 4 KiB (512-byte-block layers) is
// refused naming it; mkfs.erofs here makes only 4 KiB blocks, so the plan is built by hand.
TEST_F(ComposePmemTest, MisalignedFlatBlobIsRefused) {
  ComposeResult plan;
  plan.mode = ComposeMode::Flat;
  plan.layers.resize(2);
  plan.layers[0].path = "/l/fsmeta.erofs";
  plan.layers[0].info.blkszbits = 9;
  plan.layers[0].sectors = 24;  // 12 KiB: aligned
  plan.layers[1].index = 1;
  plan.layers[1].path = "/l/blob.img";
  plan.layers[1].first_lba = 25;  // 12.5 KiB
  plan.layers[1].sectors = 8;
  plan.layers[1].info.blkszbits = 9;
  std::string message;
  try {
    check_pmem_layout(plan);
  } catch (const Error& error) {
    message = error.what();
  }
  EXPECT_THAT(message, AllOf(HasSubstr("device 1 (/l/blob.img)"), HasSubstr("4 KiB"),
                             HasSubstr("block size is 512")));
  plan.layers[1].first_lba = 24;
  EXPECT_NO_THROW(check_pmem_layout(plan));
  plan.layers[0].sectors = 20;  // the fsmeta ends off 4 KiB
  EXPECT_THROW(check_pmem_layout(plan), Error);
}

TEST_F(ComposePmemTest, OptionValuesAreChecked) {
  EXPECT_EQ(parse_disk_attach("pmem"), DiskAttach::Pmem);
  EXPECT_EQ(parse_disk_attach("blk"), DiskAttach::Blk);
  EXPECT_THROW(parse_disk_attach("nvme"), Error);
  EXPECT_EQ(parse_dax_fallback("warn"), contract::DaxFallback::Warn);
  EXPECT_EQ(parse_dax_fallback("error"), contract::DaxFallback::Error);
  EXPECT_THROW(parse_dax_fallback("ignore"), Error);
  EXPECT_EQ(pmem_padded_sectors(1), 4096u);
  EXPECT_EQ(pmem_padded_sectors(4096), 4096u);
  EXPECT_EQ(pmem_padded_sectors(4097), 8192u);
  EXPECT_THROW(pmem_padded_sectors(UINT64_MAX - 10), Error);
  for (const char* bad : {"0000:00:10", "0000:00:20.0", "0000:00:1F.0", "0000:01:02.0"}) {
    ComposeOptions options = pmem_options(dir / "out");
    options.pmem.pci_address = bad;
    EXPECT_THAT(refusal(options), HasSubstr(std::string("--pmem-pci-addr '") + bad + "'"));
  }
}

// The command line: --attach pmem means raw, refuses vmdk and --verity on, and the pmem-only
// options are refused without it.
TEST_F(ComposePmemTest, CliRefusalsSayWhy) {
  auto layers = std::vector<std::string>{dir / "top.erofs", dir / "base.erofs"};
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> all{"compose"};
    all.insert(all.end(), args.begin(), args.end());
    all.insert(all.end(), {"-o", dir / "cli"});
    all.insert(all.end(), layers.begin(), layers.end());
    return test::cli(all);
  };
  auto vmdk = run({"--attach", "pmem", "--format", "vmdk"});
  EXPECT_NE(vmdk.exit_code, 0);
  EXPECT_THAT(vmdk.err, AllOf(HasSubstr("--attach pmem"), HasSubstr("--format vmdk")));
  auto verity = run({"--attach", "pmem", "--verity", "on", "--allow-copy"});
  EXPECT_NE(verity.exit_code, 0);
  EXPECT_THAT(verity.err, HasSubstr(kDaxVerityConflict));
  auto fallback = run({"--attach", "pmem", "--dax-fallback", "maybe", "--allow-copy"});
  EXPECT_NE(fallback.exit_code, 0);
  EXPECT_THAT(fallback.err, HasSubstr("--dax-fallback"));
  auto without = run({"--dax-fallback", "warn"});
  EXPECT_NE(without.exit_code, 0);
  EXPECT_THAT(without.err, HasSubstr("--dax-fallback is only for --attach pmem"));
  auto addr = run({"--pmem-pci-addr", "0000:00:10.0"});
  EXPECT_NE(addr.exit_code, 0);
  EXPECT_THAT(addr.err, HasSubstr("--pmem-pci-addr is only for --attach pmem"));
  EXPECT_FALSE(fs::exists(dir / "cli"));

  // --verity auto with a sidecar beside a layer: no verity, and a note that says so.
  std::ofstream(dir / "top.erofs.dmverity") << "{}";
  auto composed = run({"--attach", "pmem", "--allow-copy", "--dax-fallback", "warn"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  EXPECT_THAT(composed.err, AllOf(HasSubstr("dm-verity not used for " + dir / "top.erofs"),
                                  HasSubstr(kDaxVerityConflict)));
  EXPECT_THAT(composed.out, HasSubstr("attach as virtio-pmem"));
  EXPECT_EQ(read_json(dir / "cli/layout.json")["format"], "raw");
  EXPECT_THAT(read_json(dir / "cli/storage.json")[0]["options"].dump(),
              AllOf(HasSubstr("X-erofs-vmdk.dax-fallback=warn"), Not(HasSubstr("dmverity"))));
}

// hook --attach pmem: the lower disk is a padded disk.img with the pmem entries, its storages
// are pmem lowers, the upper stays virtio-blk, and cleanup removes the image.
TEST_F(ComposePmemTest, HookWritesThePmemEntriesAndCleanupRemovesTheImage) {
  EVMDK_REQUIRE_TOOLS("mkfs.ext4");
  fs::create_directories(dir / "snap");
  HookRequest request;
  request.id = "pmem1";
  request.state_dir = dir / "state";
  request.mounts = parse_mount_list_text(
      test::containerd_block_mode_list(dir / "snap/rw.img", 8388608,
                                       {dir / "top.erofs", dir / "base.erofs"})
          .dump(),
      "test");
  request.disk_format = DiskFormat::Raw;
  request.allow_copy = true;
  request.attach = DiskAttach::Pmem;
  request.dax_fallback = contract::DaxFallback::Warn;
  json output = run_hook(request);
  const json* lowers = nullptr;
  for (const auto& disk : output["disks"]) {
    if (disk["role"] == "lowers") lowers = &disk;
    if (disk["role"] == "upper") {
      EXPECT_FALSE(disk.contains("attach"));
    }
  }
  ASSERT_NE(lowers, nullptr) << output.dump(2);
  std::string image = (*lowers)["path"];
  EXPECT_EQ(image, dir / "state/pmem1/lowers/disk.img");
  EXPECT_EQ((*lowers)["attach"], "pmem");
  EXPECT_EQ(fs::file_size(image) % kTwoMiB, 0u);
  const json& pmem = (*lowers)["qemu"]["pmem"];
  EXPECT_EQ(pmem["memory_backend"]["mem-path"], image);
  EXPECT_EQ(pmem["device_add"]["id"], (*lowers)["serial"]);
  EXPECT_EQ(pmem["size"], fs::file_size(image));
  size_t pmem_storages = 0;
  for (const auto& storage : output["storages"]) {
    if (storage["driver"] != "nvdimm") continue;
    ++pmem_storages;
    EXPECT_EQ(storage["source"], "pmem-scan");
    EXPECT_THAT(storage["options"].dump(), HasSubstr("X-erofs-vmdk.dax-fallback=warn"));
  }
  EXPECT_EQ(pmem_storages, 2u);
  EXPECT_THAT(output["notes"].dump(), HasSubstr(kDaxVerityConflict));

  auto report = cleanup_hook("pmem1", dir / "state");
  EXPECT_THAT(report.left, ::testing::IsEmpty());
  EXPECT_THAT(report.removed, Contains(image));
  EXPECT_FALSE(fs::exists(image));

  request.verity = VerityPolicy::kOn;
  EXPECT_THROW(run_hook(request), Error);
}

}  // namespace
}  // namespace evmdk::host
