// compose without root: real mkfs.erofs layers in, the disk QEMU presents (qemu-img convert)
// checked byte for byte, plus every bad input refused with nothing written.
#include <gmock/gmock.h>

#include <fcntl.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/gpt.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

class ComposeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "qemu-img", "sgdisk");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-000000000001", "t");
    test::make_layer(dir.path(), "middle", "00000000-0000-4000-8000-000000000002", "m");
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-000000000003", "b");
  }
  ComposeOptions options_for(std::vector<std::string> names, const std::string& out) {
    ComposeOptions options;
    for (const auto& name : names) options.layers.push_back({dir / (name + ".erofs"), {}});
    options.output_dir = out;
    return options;
  }
  std::string compose_error(const ComposeOptions& options) {
    try {
      compose(options);
    } catch (const Error& error) {
      return error.what();
    }
    return "no error";
  }
  std::string to_raw(const std::string& descriptor) {
    std::string raw = dir / "disk.raw";
    fs::remove(raw);
    auto result = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", descriptor, raw});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return raw;
  }
  test::TempDir dir;
};

TEST_F(ComposeTest, GptDiskPresentsEveryLayerAtItsPartition) {
  std::string out = dir / "out";
  ComposeResult result = compose(options_for({"top", "middle", "base"}, out));
  EXPECT_EQ(result.mode, ComposeMode::Gpt);
  EXPECT_EQ(listing(out), (std::vector<std::string>{"disk.vmdk", "gpt-head.img", "gpt-tail.img",
                                                    "layout.json", "qemu.json", "storage.json",
                                                    "zero.img"}));
  std::string raw = to_raw(out + "/disk.vmdk");

  auto verify = test::run({"sgdisk", "-v", raw});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("No problems found"));
  EXPECT_THAT(verify.out + verify.err, ::testing::Not(HasSubstr("Warning")));
  EXPECT_THAT(verify.out + verify.err, ::testing::Not(HasSubstr("Caution")));

  UniqueFd fd = open_or_throw(raw, O_RDONLY);
  gpt::Table table = gpt::read_table(fd.get(), raw);
  ASSERT_EQ(table.partitions.size(), 3u);
  const char* names[] = {"top", "middle", "base"};
  for (size_t i = 0; i < 3; ++i) {
    const auto& p = table.partitions[i];
    const auto& layer = result.layers[i];
    EXPECT_EQ(p.first_lba % 2048, 0u) << "1 MiB aligned";
    EXPECT_EQ(gpt::format_guid(p.unique), layer.partuuid);
    EXPECT_EQ(p.type, gpt::linux_filesystem_type());
    EXPECT_EQ(p.name, "layer-" + std::to_string(i));
    std::string layer_bytes = test::read_file(dir / (std::string(names[i]) + ".erofs"));
    // The partition covers the whole layer file and ends on the next 1 MiB boundary.
    EXPECT_EQ((p.last_lba - p.first_lba + 1) * 512,
              (layer_bytes.size() + (1 << 20) - 1) / (1 << 20) * (1 << 20));
    EXPECT_EQ(layer.sectors, (layer_bytes.size() + 511) / 512);
    EXPECT_EQ(test::read_bytes(raw, p.first_lba * 512, layer_bytes.size()), layer_bytes)
        << "partition " << i + 1 << " must hold layer " << names[i];
  }
  EXPECT_EQ(table.partitions[0].first_lba, 2048u);

  // storage.json: one lower per layer, top first, with the identity markers the guest checks.
  auto storages = storages_from_json(nlohmann::json::parse(test::read_file(out + "/storage.json")));
  ASSERT_EQ(storages.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& s = storages[i];
    EXPECT_EQ(s.fstype, "erofs");
    EXPECT_EQ(s.source, "serial:" + result.serial);
    EXPECT_EQ(option_value(s.options, marker::kPartitionNumber), std::to_string(i + 1));
    EXPECT_EQ(option_value(s.options, marker::kPartUuid), result.layers[i].partuuid);
    EXPECT_EQ(option_value(s.options, marker::kErofsUuid),
              "00000000-0000-4000-8000-00000000000" + std::to_string(i == 0 ? 1 : i == 1 ? 2 : 3));
    EXPECT_EQ(option_value(s.options, marker::kLayerIndex), std::to_string(i));
    EXPECT_TRUE(has_option(s.options, marker::kOverlayLower));
    EXPECT_EQ(option_value(s.options, marker::kGptPartitioned), "true");
    EXPECT_TRUE(has_option(s.options, "ro"));
  }
  EXPECT_LE(result.serial.size(), 20u);

  auto qemu = nlohmann::json::parse(test::read_file(out + "/qemu.json"));
  EXPECT_EQ(qemu["blockdev-add"]["driver"], "vmdk");
  EXPECT_EQ(qemu["blockdev-add"]["read-only"], true);
  EXPECT_EQ(qemu["blockdev-add"]["force-share"], true);
  EXPECT_THAT(qemu["drive"].get<std::string>(),
              AllOf(HasSubstr("format=vmdk"), HasSubstr("readonly=on")));
  EXPECT_THAT(qemu["drive_args"][3].get<std::string>(), HasSubstr("serial=" + result.serial));

  auto layout = nlohmann::json::parse(test::read_file(out + "/layout.json"));
  EXPECT_EQ(layout["layers"].size(), 3u);
  EXPECT_EQ(layout["layers"][1]["partuuid"], result.layers[1].partuuid);
  EXPECT_EQ(layout["disk_sectors"], table.total_sectors);
}

TEST_F(ComposeTest, SameInputsGiveByteIdenticalOutputs) {
  std::string out = dir / "out";
  compose(options_for({"top", "middle", "base"}, out));
  std::map<std::string, std::string> first;
  for (const auto& name : listing(out)) first[name] = test::read_file(out + "/" + name);
  compose(options_for({"top", "middle", "base"}, out));
  for (const auto& name : listing(out)) {
    EXPECT_EQ(test::read_file(out + "/" + name), first[name]) << name;
  }
  EXPECT_EQ(listing(out).size(), first.size());
}

TEST_F(ComposeTest, BottomFirstOrderGivesTheSameDisk) {
  auto top_first = plan_compose(options_for({"top", "middle", "base"}, dir / "a"));
  auto options = options_for({"base", "middle", "top"}, dir / "a");
  options.order = LayerOrder::BottomFirst;
  auto bottom_first = plan_compose(options);
  EXPECT_EQ(top_first.descriptor, bottom_first.descriptor);
  EXPECT_EQ(top_first.layout, bottom_first.layout);
}

TEST_F(ComposeTest, PartuuidsAreUniqueAndDependOnPositionAndLayer) {
  auto a = plan_compose(options_for({"top", "middle", "base"}, dir / "a"));
  auto b = plan_compose(options_for({"middle", "top", "base"}, dir / "a"));
  std::set<std::string> all;
  for (const auto& l : a.layers) all.insert(l.partuuid);
  for (const auto& l : b.layers) all.insert(l.partuuid);
  EXPECT_EQ(all.size(), 5u) << "base at position 2 is the same in both; the rest differ";
  EXPECT_EQ(a.layers[2].partuuid, b.layers[2].partuuid);
  EXPECT_NE(a.serial, b.serial);
  // A copy of the same image at another position still gets its own PARTUUID.
  fs::copy_file(dir / "top.erofs", dir / "topcopy.erofs");
  auto c = plan_compose(options_for({"top", "topcopy"}, dir / "a"));
  EXPECT_NE(c.layers[0].partuuid, c.layers[1].partuuid);
}

TEST_F(ComposeTest, RawModeUsesTheLayerItself) {
  std::string out = dir / "out";
  ComposeResult result = compose(options_for({"top"}, out));
  EXPECT_EQ(result.mode, ComposeMode::Raw);
  EXPECT_EQ(result.disk_path, dir / "top.erofs");
  EXPECT_FALSE(result.descriptor);
  EXPECT_EQ(listing(out), (std::vector<std::string>{"layout.json", "qemu.json", "storage.json"}));
  auto qemu = nlohmann::json::parse(test::read_file(out + "/qemu.json"));
  EXPECT_EQ(qemu["blockdev-add"]["driver"], "raw");
  EXPECT_EQ(qemu["blockdev-add"]["file"]["filename"], dir / "top.erofs");
  auto storages = storages_from_json(nlohmann::json::parse(test::read_file(out + "/storage.json")));
  ASSERT_EQ(storages.size(), 1u);
  EXPECT_FALSE(has_option(storages[0].options, marker::kPartitionNumber));
}

TEST_F(ComposeTest, AppendedVerityTreeStaysReachableInItsPartition) {
  std::string top = dir / "top.erofs";
  auto fs_size = fs::file_size(top);
  test::write_bytes(top, fs_size, std::string(5000, 'v'));  // not a multiple of 512
  std::string out = dir / "out";
  auto result = compose(options_for({"top", "base"}, out));
  EXPECT_EQ(result.layers[0].sectors, (fs_size + 5000 + 511) / 512);
  std::string raw = to_raw(out + "/disk.vmdk");
  EXPECT_EQ(test::read_bytes(raw, 2048 * 512 + fs_size, 5000), std::string(5000, 'v'));
}

TEST_F(ComposeTest, FdsetDescriptorNamesFdsetsInFileOrder) {
  std::string out = dir / "out";
  auto options = options_for({"top", "middle"}, out);
  options.fdset = true;
  options.first_fdset_id = 3;
  auto result = compose(options);
  std::string descriptor = test::read_file(out + "/disk.vmdk");
  EXPECT_THAT(descriptor, HasSubstr("\"/dev/fdset/3\""));
  EXPECT_THAT(descriptor, ::testing::Not(HasSubstr(dir.path())));
  ASSERT_EQ(result.fdset_files.size(), 5u);  // head, top, zero, middle, tail
  EXPECT_EQ(result.fdset_files[0], out + "/gpt-head.img");
  EXPECT_EQ(result.fdset_files[1], dir / "top.erofs");
  EXPECT_EQ(result.fdset_files[2], out + "/zero.img");
  EXPECT_EQ(result.fdset_files[3], dir / "middle.erofs");
  auto qemu = nlohmann::json::parse(test::read_file(out + "/qemu.json"));
  EXPECT_EQ(qemu["fdsets"][1]["fdset-id"], 4);
  EXPECT_EQ(qemu["fdsets"][1]["path"], dir / "top.erofs");
}

TEST_F(ComposeTest, PerLayerExtraOptionsReachOnlyThatLayersStorage) {
  auto options = options_for({"top", "middle"}, dir / "out");
  options.layers[1].extra_options = {"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=ab"};
  auto result = plan_compose(options);
  EXPECT_FALSE(has_option(result.storages[0].options, marker::kDmverityEnabled));
  EXPECT_EQ(option_value(result.storages[1].options, marker::kDmverityRoothash), "ab");
  EXPECT_EQ(result.storages[1].mount_point, "lower-1");
}

// Each bad input: a clear error naming the layer, and nothing new in the output directory.
class ComposeRefusalTest : public ComposeTest {
 protected:
  void expect_refused(const ComposeOptions& options, const std::vector<std::string>& needles) {
    std::string error = compose_error(options);
    for (const auto& needle : needles) EXPECT_THAT(error, HasSubstr(needle));
    EXPECT_FALSE(fs::exists(options.output_dir)) << "a failed compose created " << options.output_dir;
  }
};

TEST_F(ComposeRefusalTest, MissingLayer) {
  expect_refused(options_for({"top", "nope"}, dir / "out"),
                 {"layer 1", dir / "nope.erofs", "No such file"});
}

TEST_F(ComposeRefusalTest, NotErofs) {
  test::write_file(dir / "junk.erofs", std::string(10000, 'j'));
  expect_refused(options_for({"top", "junk"}, dir / "out"),
                 {"layer 1", dir / "junk.erofs", "not an EROFS image"});
}

TEST_F(ComposeRefusalTest, BadChecksum) {
  test::write_bytes(dir / "middle.erofs", 1024 + 64, "x");
  expect_refused(options_for({"top", "middle", "base"}, dir / "out"),
                 {"layer 1", dir / "middle.erofs", "checksum"});
}

TEST_F(ComposeRefusalTest, Truncated) {
  fs::resize_file(dir / "base.erofs", 4096);
  expect_refused(options_for({"top", "middle", "base"}, dir / "out"),
                 {"layer 2", dir / "base.erofs", "truncated"});
}

TEST_F(ComposeRefusalTest, Unreadable) {
  if (::geteuid() == 0) {
    // root reads anything: a directory stands in for an unreadable file.
    fs::create_directory(dir / "adir.erofs");
    expect_refused(options_for({"top", "adir"}, dir / "out"), {"layer 1", dir / "adir.erofs"});
  } else {
    fs::permissions(dir / "base.erofs", fs::perms::none);
    expect_refused(options_for({"top", "base"}, dir / "out"), {"layer 1", "Permission denied"});
  }
}

TEST_F(ComposeRefusalTest, SameFileTwice) {
  fs::create_symlink(dir / "top.erofs", dir / "alias.erofs");
  expect_refused(options_for({"top", "middle", "alias"}, dir / "out"),
                 {"layer 2", "same file as layer 0", dir / "top.erofs"});
}

TEST_F(ComposeRefusalTest, PathADescriptorCannotHold) {
  std::string quoted = dir / "bad\"name.erofs";
  fs::copy_file(dir / "top.erofs", quoted);
  auto options = options_for({"middle"}, dir / "out");
  options.layers.insert(options.layers.begin(), {quoted, {}});
  expect_refused(options, {"layer 0", quoted, "double quote"});
  // The same layer is fine when the descriptor names fdsets instead of paths.
  options.fdset = true;
  EXPECT_NO_THROW(plan_compose(options));
  // Raw mode writes no descriptor, so the name is fine there too.
  auto raw = options_for({}, dir / "out");
  raw.layers.push_back({quoted, {}});
  EXPECT_EQ(plan_compose(raw).disk_path, quoted);
}

TEST_F(ComposeRefusalTest, TooManyLayers) {
  auto options = options_for({"top"}, dir / "out");
  for (int i = 0; i < 255; ++i) options.layers.push_back({dir / "nothing-here", {}});
  options.mode = ComposeMode::Gpt;
  expect_refused(options, {"too many layers: 256", "at most 255"});
}

TEST_F(ComposeRefusalTest, RawWithSeveralLayers) {
  auto options = options_for({"top", "base"}, dir / "out");
  options.mode = ComposeMode::Raw;
  expect_refused(options, {"raw mode takes exactly one layer"});
}

TEST_F(ComposeRefusalTest, ExistingDirectoryKeepsOnlyWhatWasThere) {
  std::string out = dir / "out";
  fs::create_directory(out);
  test::write_file(out + "/keep.txt", "mine");
  auto options = options_for({"top", "nope"}, out);
  EXPECT_THAT(compose_error(options), HasSubstr("nope.erofs"));
  EXPECT_EQ(listing(out), std::vector<std::string>{"keep.txt"});
}

}  // namespace
}  // namespace evmdk::host
