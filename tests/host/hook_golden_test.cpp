// Golden tests: every mount-list shape the containerd EROFS snapshotter returns, built over
// real mkfs.erofs layers (and a real dm-verity tree from veritysetup, a real ext4 upper from
// mkfs.ext4), run through the hook; the disks and storages it emits are compared with
// tests/host/golden/hook/<shape>.json after replacing the per-run temp path with @WORK@.
// EVMDK_UPDATE_GOLDEN=1 rewrites the golden files instead of comparing.
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "hook_golden.h"
#include "layer_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HookGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "veritysetup");
    snapshots_ = work_ / "snapshots";
    state_ = work_ / "state";
    // Three layers, bottom (1) to top (3), as the snapshotter lays them out.
    make_layer_at(1, "11111111-1111-4111-8111-111111111111",
                  {{"etc/os-release", "base\n"}, {"opt/app/version", "1\n"}, {"usr/bin/", ""}});
    make_layer_at(2, "22222222-2222-4222-8222-222222222222",
                  {{"opt/app/version", "2\n"}, {"opt/app/tool", "tool\n"}});
    make_layer_at(3, "33333333-3333-4333-8333-333333333333",
                  {{"opt/app/version", "3\n"}, {"etc/motd", "top\n"}});
    fs::create_directories(snapshots_ + "/9");  // the container's own snapshot (rwlayer.img)
  }

  void make_layer_at(int n, const std::string& uuid, const std::map<std::string, std::string>& files) {
    std::string dir = fmt::format("{}/{}", snapshots_, n);
    test::make_tree(dir + "/tree", files);
    test::make_erofs(dir + "/tree", dir + "/layer.erofs", uuid);
  }

  std::string layer(int n) const { return fmt::format("{}/{}/layer.erofs", snapshots_, n); }
  std::string rwlayer() const { return snapshots_ + "/9/rwlayer.img"; }

  // Appends a dm-verity tree to layer n (containerd's parameters: sha256, 4 KiB, zero salt)
  // and writes the sidecar JSON next to it.
  std::string protect(int n) {
    std::string image = layer(n);
    auto size = fs::file_size(image);
    auto result = test::run({"veritysetup", "format", fmt::format("--hash-offset={}", size),
                             "--salt=" + std::string(64, '0'),
                             "--uuid=00000000-0000-4000-8000-00000000000" + std::to_string(n),
                             image, image});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    // veritysetup prints "Root hash:<spaces><hex>".
    size_t at = result.out.find("Root hash:");
    EXPECT_NE(at, std::string::npos) << result.out;
    size_t start = result.out.find_first_of("0123456789abcdef", at + 10);
    size_t end = result.out.find_first_not_of("0123456789abcdef", start);
    std::string root_hash = result.out.substr(start, end - start);
    EXPECT_EQ(root_hash.size(), 64u) << result.out;
    std::string sidecar = image + ".dmverity";
    test::write_file(sidecar, json{{"roothash", root_hash}, {"hashoffset", size}}.dump());
    return sidecar;
  }

  json run(const std::string& id, const std::string& mounts_json) {
    HookRequest request;
    request.id = id;
    request.state_dir = state_;
    request.mounts = parse_mount_list_text(mounts_json, id);
    return run_hook(request);
  }

  // Compares with the golden file and checks every disk it names is really there.
  void expect_golden(const std::string& shape, const json& output) {
    for (const auto& disk : output["disks"]) {
      EXPECT_TRUE(fs::exists(disk["path"].get<std::string>())) << disk.dump();
    }
    EXPECT_EQ(json::parse(test::read_file(output["dir"].get<std::string>() + "/storage.json")),
              output["storages"]);
    test::expect_hook_golden(shape, test::project_hook_output(output, work_.path()));
  }

  test::TempDir work_;
  std::string snapshots_;
  std::string state_;
};

std::string mkfs_mount(const std::string& image) {
  return json{{"type", "mkfs/ext4"},
              {"source", image},
              {"options", {"X-containerd.mkfs.fs=ext4", "X-containerd.mkfs.size=16777216", "rw",
                           "loop"}}}
      .dump();
}

std::string erofs_mount(const std::string& image, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> options{"ro", "loop"};
  options.insert(options.end(), extra.begin(), extra.end());
  return json{{"type", "erofs"}, {"source", image}, {"options", options}}.dump();
}

TEST_F(HookGolden, BlockModeThreeLayersWithVerityAndIdMaps) {
  std::string sidecar = protect(2);
  // Capitalised field names, as containerd's Go structs marshal them.
  std::string list = fmt::format(R"([
    {{"Type":"mkfs/ext4","Source":"{}","Target":"",
      "Options":["X-containerd.mkfs.fs=ext4","X-containerd.mkfs.size=16777216","rw","loop"]}},
    {{"Type":"erofs","Source":"{}","Options":["ro","loop"]}},
    {{"Type":"erofs","Source":"{}","Options":["ro","loop","X-containerd.dmverity={}"]}},
    {{"Type":"erofs","Source":"{}","Options":["ro","loop"]}},
    {{"Type":"format/mkdir/overlay","Source":"overlay","Options":[
      "X-containerd.mkdir.path={{{{ mount 0 }}}}/upper:0755",
      "X-containerd.mkdir.path={{{{ mount 0 }}}}/work:0755",
      "workdir={{{{ mount 0 }}}}/work","upperdir={{{{ mount 0 }}}}/upper",
      "uidmap=0:100000:65536","gidmap=0:100000:65536",
      "lowerdir={{{{ overlay 1 3 }}}}","index=off"]}}])",
                                 rwlayer(), layer(3), layer(2), sidecar, layer(1));
  ASSERT_FALSE(fs::exists(rwlayer()));
  json output = run("block-mode", list);
  expect_golden("block-mode", output);
  // The upper was created as containerd's mount manager would: sparse, of the size, ext4.
  ASSERT_TRUE(fs::exists(rwlayer()));
  EXPECT_EQ(fs::file_size(rwlayer()), 16777216u);
  auto type = test::run({"blkid", "-o", "value", "-s", "TYPE", rwlayer()});
  EXPECT_EQ(type.out, "ext4\n");
}

TEST_F(HookGolden, BlockModeOneLowerUsesAnExistingUpper) {
  // An upper that already exists is used as is (containerd's mount manager made it).
  auto made = test::run({"truncate", "-s", "8M", rwlayer()});
  ASSERT_EQ(made.exit_code, 0);
  ASSERT_EQ(test::run({"mkfs.ext4", "-q", rwlayer()}).exit_code, 0);
  std::string list = "[" + json{{"type", "ext4"}, {"source", rwlayer()}, {"options", {"rw", "loop"}}}.dump() +
                     "," + erofs_mount(layer(3)) + "," +
                     R"({"type":"format/mkdir/overlay","source":"overlay","options":[
      "X-containerd.mkdir.path={{ mount 0 }}/upper:0755","X-containerd.mkdir.path={{ mount 0 }}/work:0755",
      "workdir={{ mount 0 }}/work","upperdir={{ mount 0 }}/upper","lowerdir={{ mount 1 }}"]}])";
  json output = run("block-one", list);
  expect_golden("block-mode-one-lower", output);
  EXPECT_EQ(fs::file_size(rwlayer()), 8u << 20);
}

TEST_F(HookGolden, DirectoryMode) {
  std::string list = "[" + erofs_mount(layer(3)) + "," + erofs_mount(layer(2)) + "," +
                     erofs_mount(layer(1)) + "," +
                     json{{"type", "format/overlay"},
                          {"source", "overlay"},
                          {"options", {"workdir=" + snapshots_ + "/9/work",
                                       "upperdir=" + snapshots_ + "/9/fs",
                                       "lowerdir={{ overlay 0 2 }}"}}}
                         .dump() +
                     "]";
  expect_golden("directory-mode", run("dir-mode", list));
}

TEST_F(HookGolden, SingleCommittedLayer) {
  expect_golden("single-layer", run("single", "[" + erofs_mount(layer(1)) + "]"));
}

TEST_F(HookGolden, ViewOfSeveralParents) {
  std::string list = "[" + erofs_mount(layer(3)) + "," + erofs_mount(layer(2)) + "," +
                     R"({"type":"format/overlay","source":"overlay","options":["lowerdir={{ overlay 0 1 }}"]}])";
  expect_golden("view-multi", run("view", list));
}

TEST_F(HookGolden, BindOfDirectorySnapshot) {
  fs::create_directories(snapshots_ + "/9/fs");
  std::string list = json::array({{{"type", "bind"},
                                   {"source", snapshots_ + "/9/fs"},
                                   {"options", {"rbind", "rw"}}}})
                         .dump();
  json output = run("bind-fs", list);
  expect_golden("bind-fs", output);
  EXPECT_TRUE(output["disks"].empty());
}

TEST_F(HookGolden, BlockModeWithoutParentsBindsTheUpper) {
  std::string list = "[" + mkfs_mount(rwlayer()) + "," +
                     R"({"type":"format/mkdir/bind","source":"{{ mount 0 }}/upper",
                         "options":["X-containerd.mkdir.path={{ mount 0 }}/upper:0755","rbind","rw"]}])";
  json output = run("block-bind", list);
  expect_golden("block-mode-bind", output);
  EXPECT_TRUE(fs::exists(rwlayer()));
}

TEST_F(HookGolden, SingleLowerFormatBind) {
  std::string list = "[" + erofs_mount(layer(2)) + "," +
                     R"({"type":"format/bind","source":"{{ mount 0 }}","options":["ro","rbind"]}])";
  expect_golden("format-bind-ro", run("fmt-bind", list));
}

TEST_F(HookGolden, FsmetaAlone) {
  auto fixture = test::make_multi_device(snapshots_ + "/7");
  std::string list = "[" + erofs_mount(fixture.fsmeta, {"device=" + fixture.blob}) + "]";
  json output = run("fsmeta", list);
  expect_golden("fsmeta", output);
  ASSERT_EQ(output["disks"].size(), 1u);
  EXPECT_EQ(output["disks"][0]["role"], "flat");
}

TEST_F(HookGolden, FsmetaWithPlainLayersAbove) {
  auto fixture = test::make_multi_device(snapshots_ + "/7");
  std::string list = "[" + mkfs_mount(rwlayer()) + "," + erofs_mount(layer(3)) + "," +
                     erofs_mount(layer(2)) + "," +
                     erofs_mount(fixture.fsmeta, {"device=" + fixture.blob}) + "," +
                     R"({"type":"format/mkdir/overlay","source":"overlay","options":[
      "X-containerd.mkdir.path={{ mount 0 }}/upper:0755","X-containerd.mkdir.path={{ mount 0 }}/work:0755",
      "workdir={{ mount 0 }}/work","upperdir={{ mount 0 }}/upper","lowerdir={{ overlay 1 3 }}"]}])";
  json output = run("mixed", list);
  expect_golden("fsmeta-with-layers", output);
  // One gpt disk for the two plain layers, one flat disk, one upper.
  ASSERT_EQ(output["disks"].size(), 3u);
  EXPECT_EQ(output["disks"][0]["role"], "lowers");
  EXPECT_EQ(output["disks"][1]["role"], "flat");
  EXPECT_EQ(output["disks"][2]["role"], "upper");
}

}  // namespace
}  // namespace evmdk::host
