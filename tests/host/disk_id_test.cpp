// `--disk-id gpt-guid` (compose and hook): for VMMs that cannot give a disk a serial
// (Firecracker), every lower storage's source is gpt-disk-guid:<the disk's GPT disk GUID>, the
// GUID is the one really written in the GPT header, the hook salts it per container (two
// containers of one image in one VM present different GUIDs), and the modes without a GPT
// (flat, single-layer raw) are refused naming the option and the mode. The default is unchanged.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "containerd_mounts.h"
#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/ondisk/gpt.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

using test::error_of;

class DiskIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-0000000015a1", "t");
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000015a2", "b");
  }
  ComposeOptions gpt(const std::string& out, DiskId id, const std::string& salt = {}) const {
    ComposeOptions options;
    options.mode = ComposeMode::Gpt;
    options.layers = {{dir / "top.erofs", {}}, {dir / "base.erofs", {}}};
    options.output_dir = dir / out;
    options.disk_id = id;
    options.disk_guid_salt = salt;
    return options;
  }
  // The disk GUID of the primary GPT header compose wrote (gpt-head.bin holds LBA 0..).
  std::string written_disk_guid(const ComposeResult& result) const {
    for (const auto& extent : result.extents) {
      if (extent.role != "gpt-head") continue;
      std::string sector = test::read_bytes(extent.path, 512, 512);
      auto header = ondisk::parse_gpt_header(
          std::span(reinterpret_cast<const uint8_t*>(sector.data()), sector.size()), 1,
          extent.path, "primary");
      return ondisk::format_guid(header.disk_guid);
    }
    return "(no gpt-head)";
  }
  test::TempDir dir;
};

TEST_F(DiskIdTest, GptGuidSourcesNameTheDiskGuidWrittenInTheHeader) {
  ComposeResult result = compose(gpt("guid", DiskId::GptGuid));
  ASSERT_EQ(result.storages.size(), 2u);
  EXPECT_EQ(written_disk_guid(result), result.disk_guid);
  for (const auto& storage : result.storages) {
    EXPECT_EQ(storage.source, "gpt-disk-guid:" + result.disk_guid);
    EXPECT_EQ(ondisk::format_guid(contract::decode_gpt_disk_guid_source(storage.source)),
              result.disk_guid);
  }
  // storage.json says the same (what the runtime hands to the guest).
  auto document = nlohmann::json::parse(
      test::read_bytes(dir / "guid/storage.json", 0, fs::file_size(dir / "guid/storage.json")));
  EXPECT_EQ(document.dump().find("serial:"), std::string::npos) << document.dump();
  EXPECT_NE(document.dump().find("gpt-disk-guid:" + result.disk_guid), std::string::npos);
  // qemu.json still attaches the disk with its serial (a VMM that can set one may).
  EXPECT_NE(result.qemu.dump().find("serial=" + result.serial), std::string::npos)
      << result.qemu.dump();
}

TEST_F(DiskIdTest, DefaultIsSerialAndAnEmptySaltKeepsTheDiskGuid) {
  ComposeResult plain = compose(gpt("plain", DiskId::Serial));
  for (const auto& storage : plain.storages) EXPECT_EQ(storage.source, "serial:" + plain.serial);
  ComposeResult guid = compose(gpt("guid", DiskId::GptGuid));
  EXPECT_EQ(guid.disk_guid, plain.disk_guid);  // the option changes the sources only
  ComposeResult a = compose(gpt("a", DiskId::GptGuid, "evh-aaaa"));
  ComposeResult b = compose(gpt("b", DiskId::GptGuid, "evh-bbbb"));
  EXPECT_NE(a.disk_guid, plain.disk_guid);
  EXPECT_NE(a.disk_guid, b.disk_guid);
  EXPECT_EQ(written_disk_guid(a), a.disk_guid);
  EXPECT_EQ(a.storages[0].source, "gpt-disk-guid:" + a.disk_guid);
  // The PARTUUIDs (the guest's identity check per partition) do not depend on the salt.
  EXPECT_EQ(a.layers[0].partuuid, plain.layers[0].partuuid);
  EXPECT_EQ(compose(gpt("a2", DiskId::GptGuid, "evh-aaaa")).disk_guid, a.disk_guid);
  // verify reads the salted GUID back from the disk and layout.json agrees.
  auto verified = test::cli({"verify", dir / "a"});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
}

TEST_F(DiskIdTest, ModesWithoutAGptAreRefusedNamingTheOptionAndMode) {
  ComposeOptions raw = gpt("raw", DiskId::GptGuid);
  raw.mode = ComposeMode::Auto;
  raw.layers.resize(1);  // auto: one layer is raw mode
  EXPECT_THAT(error_of([&] { compose(raw); }),
              AllOf(HasSubstr("--disk-id gpt-guid"), HasSubstr("raw mode"), HasSubstr("--mode gpt")));
  EXPECT_FALSE(fs::exists(dir / "raw"));
  raw.mode = ComposeMode::Gpt;  // one partition is fine
  EXPECT_EQ(compose(raw).storages.at(0).source.rfind("gpt-disk-guid:", 0), 0u);

  auto md = test::make_multi_device(dir.path());
  ComposeOptions flat;
  flat.mode = ComposeMode::Flat;
  flat.layers = {{md.fsmeta, {}}, {md.blob, {}}};
  flat.output_dir = dir / "flat";
  flat.disk_id = DiskId::GptGuid;
  EXPECT_THAT(error_of([&] { compose(flat); }),
              AllOf(HasSubstr("--disk-id gpt-guid"), HasSubstr("flat mode")));
  flat.disk_id = DiskId::Serial;
  EXPECT_EQ(compose(flat).storages.at(0).source.rfind("serial:", 0), 0u);
}

TEST_F(DiskIdTest, ParseDiskId) {
  EXPECT_EQ(parse_disk_id("serial"), DiskId::Serial);
  EXPECT_EQ(parse_disk_id("gpt-guid"), DiskId::GptGuid);
  EXPECT_EQ(to_string(DiskId::GptGuid), "gpt-guid");
  EXPECT_THAT(error_of([] { parse_disk_id("GPT-GUID", "--disk-id"); }),
              AllOf(HasSubstr("--disk-id"), HasSubstr("serial or gpt-guid")));
}

TEST_F(DiskIdTest, CliComposeWritesGptGuidSources) {
  auto composed = test::cli({"compose", "--mode", "gpt", "--disk-id", "gpt-guid", "--json", "-o",
                             dir / "cli", dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  auto storages = nlohmann::json::parse(
      test::read_bytes(dir / "cli/storage.json", 0, fs::file_size(dir / "cli/storage.json")));
  EXPECT_NE(storages.dump().find("gpt-disk-guid:"), std::string::npos) << storages.dump();
  auto refused = test::cli({"compose", "--disk-id", "gpt-guid", "-o", dir / "cli-raw",
                            dir / "top.erofs"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, AllOf(HasSubstr("--disk-id gpt-guid"), HasSubstr("raw mode")));
  auto bad = test::cli({"compose", "--disk-id", "uuid", "-o", dir / "cli-bad", dir / "top.erofs"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--disk-id"));
}

class HookDiskIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4");
    for (int n = 1; n <= 2; ++n) {
      std::string d = fmt::format("{}/snapshots/{}", work_.path(), n);
      test::make_tree(d + "/tree", {{fmt::format("etc/layer{}", n), std::string(5000, 'x')}});
      test::make_erofs(d + "/tree", d + "/layer.erofs",
                       fmt::format("{0}{0}{0}{0}{0}{0}{0}{0}-0000-4000-8000-0000000015b0", n));
    }
    fs::create_directories(work_ / "snapshots/9");
  }
  std::string layer(int n) const {
    return fmt::format("{}/snapshots/{}/layer.erofs", work_.path(), n);
  }
  HookRequest request(const std::string& id, std::vector<std::string> layers) const {
    HookRequest r;
    r.id = id;
    r.state_dir = work_ / "state";
    r.mounts = parse_mount_list_text(
        test::containerd_block_mode_list(work_ / ("snapshots/9/rw-" + id + ".img"), 8388608,
                                         layers)
            .dump(),
        "test");
    r.disk_id = DiskId::GptGuid;
    return r;
  }
  static std::vector<std::string> lower_sources(const nlohmann::json& output) {
    std::vector<std::string> out;
    for (const auto& storage : output["storages"]) {
      if (storage.value("fstype", "") == "erofs") out.push_back(storage["source"]);
    }
    return out;
  }
  test::TempDir work_;
};

TEST_F(HookDiskIdTest, EachContainerGetsItsOwnDiskGuid) {
  auto c1 = run_hook(request("c1", {layer(2), layer(1)}));
  auto c2 = run_hook(request("c2", {layer(2), layer(1)}));
  auto s1 = lower_sources(c1), s2 = lower_sources(c2);
  ASSERT_EQ(s1.size(), 2u) << c1.dump(2);
  ASSERT_EQ(s2.size(), 2u) << c2.dump(2);
  EXPECT_EQ(s1[0], s1[1]);  // one disk
  EXPECT_EQ(s1[0].rfind("gpt-disk-guid:", 0), 0u) << s1[0];
  EXPECT_NO_THROW(contract::decode_gpt_disk_guid_source(s1[0]));
  EXPECT_NE(s1[0], s2[0]) << "two containers of one image present the same disk GUID";
  // The upper (a plain ext4 image, no GPT) keeps its serial.
  bool upper_serial = false;
  for (const auto& storage : c1["storages"]) {
    if (storage.value("fstype", "") == "ext4")
      upper_serial = storage["source"].get<std::string>().rfind("serial:", 0) == 0;
  }
  EXPECT_TRUE(upper_serial) << c1.dump(2);
  // A retry with the same request returns the same document; the default (serial) is a
  // different request for the same id.
  EXPECT_EQ(run_hook(request("c1", {layer(2), layer(1)})), c1);
  HookRequest serial = request("c1", {layer(2), layer(1)});
  serial.disk_id = DiskId::Serial;
  EXPECT_THROW(run_hook(serial), Error);
}

TEST_F(HookDiskIdTest, OneLowerIsStillAGptDisk) {
  auto output = run_hook(request("one", {layer(1)}));
  auto sources = lower_sources(output);
  ASSERT_EQ(sources.size(), 1u) << output.dump(2);
  EXPECT_EQ(sources[0].rfind("gpt-disk-guid:", 0), 0u) << sources[0];
  // Without the option one lower is a raw-mode disk (the layer itself), as before.
  HookRequest plain = request("plain", {layer(1)});
  plain.disk_id = DiskId::Serial;
  auto sources_plain = lower_sources(run_hook(plain));
  ASSERT_EQ(sources_plain.size(), 1u);
  EXPECT_EQ(sources_plain[0].rfind("serial:", 0), 0u);
}

}  // namespace
}  // namespace evmdk::host
