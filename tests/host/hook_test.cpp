// The hook's contract beyond the shapes: nothing written on error, cleanup removes exactly
// what the hook created (and is idempotent), ids that could escape the state dir are refused,
// retries return the same answer, and the CLI reads stdin and exits non-zero with the error.
#include <gmock/gmock.h>

#include <filesystem>
#include <set>

#include "containerd_mounts.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/storage_spec.h"
#include "layer_fixtures.h"
#include "real_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

class Hook : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4");
    for (int n = 1; n <= 2; ++n) {
      std::string dir = fmt::format("{}/snapshots/{}", work_.path(), n);
      test::make_tree(dir + "/tree", {{fmt::format("etc/layer{}", n), "x\n"}});
      test::make_erofs(dir + "/tree", dir + "/layer.erofs",
                       fmt::format("{0}{0}{0}{0}{0}{0}{0}{0}-0000-4000-8000-000000000000", n));
    }
    fs::create_directories(work_ / "snapshots/9");
    state_ = work_ / "state";
  }

  std::string layer(int n) const { return fmt::format("{}/snapshots/{}/layer.erofs", work_.path(), n); }
  std::string rwlayer() const { return work_ / "snapshots/9/rwlayer.img"; }

  std::string block_list(const std::string& second_layer) const {
    return test::containerd_block_mode_list(rwlayer(), 8388608, {layer(2), second_layer}).dump();
  }

  json hook(const std::string& id, const std::string& list) {
    return run_hook({id, state_, parse_mount_list_text(list, "test")});
  }

  // Every path under a directory, for before/after comparisons.
  static std::set<std::string> tree(const std::string& root) {
    std::set<std::string> out;
    if (!fs::exists(root)) return out;
    for (const auto& entry : fs::recursive_directory_iterator(root)) out.insert(entry.path().string());
    return out;
  }

  test::TempDir work_;
  std::string state_;
};

TEST_F(Hook, ABadLayerIsNamedAndNothingIsWritten) {
  test::write_file(work_ / "snapshots/bad.erofs", std::string(8192, 'x'));
  auto before = tree(work_.path());
  try {
    hook("c1", block_list(work_ / "snapshots/bad.erofs"));
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("mount 2 (type 'erofs')"));
    EXPECT_THAT(error.what(), HasSubstr("bad.erofs"));
  }
  EXPECT_EQ(tree(work_.path()), before);  // no state dir, no rwlayer.img, no temp file
  EXPECT_FALSE(fs::exists(rwlayer()));
}

TEST_F(Hook, AFailureAfterComposeRollsEverythingBack) {
  // mkfs.ext4 refuses a 64 KiB image: that happens after the lower disk was composed into the
  // hook directory, so the whole run must be undone (state dirs, compose output, temp image).
  std::string list = block_list(layer(1));
  list.replace(list.find("mkfs.size=8388608"), 17, "mkfs.size=65536");
  auto before = tree(work_.path());
  try {
    hook("c1", list);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("mkfs.ext4 of the upper " + rwlayer() + " failed"));
  }
  EXPECT_EQ(tree(work_.path()), before);
}

TEST_F(Hook, AMissingSidecarIsNamedAndNothingIsWritten) {
  std::string list = json::array({{{"type", "erofs"},
                                   {"source", layer(1)},
                                   {"options", {"ro", "X-containerd.dmverity=" + layer(1) + ".dmverity"}}}})
                         .dump();
  auto before = tree(work_.path());
  EXPECT_THAT([&] {
    try {
      hook("c1", list);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("mount 0 (type 'erofs'): layer " + layer(1) + " has no dm-verity data"));
  EXPECT_EQ(tree(work_.path()), before);
}

TEST_F(Hook, VerityPolicyOnRefusesAnUnprotectedLayerAndABrokenSidecarIsAnError) {
  std::string plain = json::array({{{"type", "erofs"}, {"source", layer(1)}, {"options", {"ro"}}}}).dump();
  HookRequest request{"c1", state_, parse_mount_list_text(plain, "test")};
  request.verity = VerityPolicy::kOn;
  EXPECT_THROW(run_hook(request), Error);
  request.verity = VerityPolicy::kAuto;
  EXPECT_NO_THROW(run_hook(request));  // auto: no sidecar, no verity options
  cleanup_hook("c1", state_);

  // A sidecar whose root hash does not match the tree: refused even under auto.
  test::write_file(layer(1) + ".dmverity", R"({"roothash":")" + std::string(64, 'a') + R"(","hashoffset":4096})");
  auto before = tree(work_.path());
  try {
    run_hook(request);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("mount 0 (type 'erofs')"));
  }
  EXPECT_EQ(tree(work_.path()), before);
}

// A merged fsmeta with containerd's per-layer sidecars: X-containerd.dmverity on the fsmeta
// makes its own verity required, and its device blob is protected under the policy, so the
// flat disk's one Storage carries both (the blob's under its device slot). `on` refuses a blob
// without verity data, naming the mount and the blob.
TEST_F(Hook, FsmetaAndItsDeviceBlobsAreProtectedOnTheFlatDisk) {
  auto fixture = test::make_multi_device(work_ / "snapshots/7");
  auto fsmeta_list = [&](std::vector<std::string> extra) {
    json options = {"ro", "loop", "device=" + fixture.blob};
    for (auto& option : extra) options.push_back(option);
    return json::array({{{"type", "erofs"}, {"source", fixture.fsmeta}, {"options", options}}}).dump();
  };
  verity_format(fixture.fsmeta, {});
  HookRequest request{"c1", state_,
                      parse_mount_list_text(fsmeta_list({"X-containerd.dmverity=" + fixture.fsmeta + ".dmverity"}), "test")};
  request.verity = VerityPolicy::kOn;
  try {
    run_hook(request);
    FAIL() << "expected --verity=on to refuse the unprotected blob";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), AllOf(HasSubstr("mount 0 (type 'erofs')"), HasSubstr("device=" + fixture.blob),
                                    HasSubstr("--verity=on")));
  }
  EXPECT_FALSE(fs::exists(state_ + "/c1"));

  verity_format(fixture.blob, {});
  json output = run_hook(request);
  auto storages = storages_from_json(output["storages"]);
  const Storage* lower = nullptr;
  for (const auto& storage : storages) {
    if (storage.fstype == "erofs") lower = &storage;
  }
  ASSERT_NE(lower, nullptr) << output.dump(2);
  EXPECT_EQ(option_value(lower->options, "X-kata.dmverity.roothash"),
            read_verity_sidecar(fixture.fsmeta + ".dmverity").root_hash);
  EXPECT_EQ(option_value(lower->options, "X-erofs-vmdk.device.1.dmverity.roothash"),
            read_verity_sidecar(fixture.blob + ".dmverity").root_hash);
  EXPECT_EQ(output["verity"]["unprotected"], json::array());
  cleanup_hook("c1", state_);
}

// Issue 14 item 2, containerd 2.2.4's own block-view-noparent list: the image is created as for
// the writable case (sparse, of the size, ext4), with upper/ already in it (the guest sees the
// disk read-only and cannot make it), attached read-only, and kept by cleanup; an existing
// image is used as is.
TEST_F(Hook, ReadOnlyViewWithoutParentsCreatesItsImageAndAttachesItReadOnly) {
  EVMDK_REQUIRE_TOOLS("debugfs", "blkid");
  std::string snapshots = work_ / "snapshots";
  fs::create_directories(snapshots + "/10");
  std::string list =
      test::read_fixture_list(test::containerd22_list("block-view-noparent"), snapshots);
  json output = hook("rov", list);
  const std::string image = snapshots + "/10/rwlayer.img";
  ASSERT_TRUE(fs::exists(image));
  EXPECT_EQ(fs::file_size(image), 67108864u);
  EXPECT_EQ(test::run({"blkid", "-o", "value", "-s", "TYPE", image}).out, "ext4\n");
  auto stat_upper = test::run({"debugfs", "-R", "stat /upper", image});
  EXPECT_THAT(stat_upper.out, HasSubstr("Type: directory"));
  EXPECT_THAT(stat_upper.out, HasSubstr("Mode:  0755"));
  ASSERT_EQ(output["disks"].size(), 1u);
  const json& disk = output["disks"][0];
  EXPECT_TRUE(disk["read_only"].get<bool>());
  EXPECT_TRUE(disk["created"].get<bool>());
  EXPECT_EQ(disk["qemu"]["blockdev-add"]["read-only"], true);
  EXPECT_EQ(disk["qemu"]["blockdev-add"]["file"]["read-only"], true);
  EXPECT_THAT(disk["qemu"]["drive_args"][1].get<std::string>(), HasSubstr(",readonly=on"));
  EXPECT_TRUE(output["rootfs"]["read_only"].get<bool>());
  EXPECT_EQ(output["storages"][0]["options"][0], "ro");
  ASSERT_EQ(test::cli({"hook", "cleanup", "--id", "rov", "--state-dir", state_}).exit_code, 0);
  EXPECT_TRUE(fs::exists(image)) << "the image is containerd's snapshot, not the hook's";

  // Now it exists: used as is, not created again.
  json again = hook("rov2", list);
  EXPECT_FALSE(again["disks"][0]["created"].get<bool>());
  EXPECT_TRUE(again["disks"][0]["read_only"].get<bool>());
}

TEST_F(Hook, CleanupRemovesExactlyWhatTheHookCreatedAndIsIdempotent) {
  auto before_layers = tree(work_ / "snapshots");
  json output = hook("c1", block_list(layer(1)));
  hook("c2", block_list(layer(1)) /* same layers, another container */);
  std::string dir = output["dir"];
  EXPECT_EQ(dir, state_ + "/c1");
  // Something the hook did not create, placed in its directory by someone else.
  test::write_file(dir + "/operator-notes.txt", "keep me\n");

  auto report = cleanup_hook("c1", state_);
  EXPECT_TRUE(report.existed);
  EXPECT_THAT(report.left, ::testing::IsEmpty());
  ASSERT_EQ(report.kept.size(), 1u);
  EXPECT_THAT(report.kept[0], HasSubstr(dir + ": holds files the hook did not create"));
  EXPECT_TRUE(fs::exists(dir + "/operator-notes.txt"));
  std::set<std::string> left = tree(dir);
  EXPECT_EQ(left, std::set<std::string>{dir + "/operator-notes.txt"});
  // The other container, the layers and the upper image are untouched.
  EXPECT_TRUE(fs::exists(state_ + "/c2/hook.json"));
  EXPECT_TRUE(fs::exists(rwlayer()));
  for (const auto& path : before_layers) EXPECT_TRUE(fs::exists(path)) << path;

  fs::remove(dir + "/operator-notes.txt");
  auto again = cleanup_hook("c1", state_);
  EXPECT_TRUE(again.existed);
  EXPECT_FALSE(fs::exists(dir));
  auto third = cleanup_hook("c1", state_);
  EXPECT_FALSE(third.existed);
  EXPECT_TRUE(third.removed.empty());
}

TEST_F(Hook, RefusesIdsThatCouldEscapeTheStateDir) {
  fs::create_directories(state_);
  test::write_file(work_ / "victim", "data\n");
  const std::vector<std::string> ids{"..", ".", "../victim", "a/b", "", ".hidden", "-rf", "x\ny",
                                     std::string(129, 'a')};
  for (const auto& id : ids) {
    EXPECT_THROW(contract::validate_container_id(id), Error) << id;
    EXPECT_THROW(cleanup_hook(id, state_), Error) << id;
    EXPECT_THROW(hook(id, block_list(layer(1))), Error) << id;
  }
  EXPECT_TRUE(fs::exists(work_ / "victim"));
  EXPECT_NO_THROW(contract::validate_container_id("0f3e9a_b-c.d"));
}

TEST_F(Hook, CleanupRefusesASymlinkedContainerDir) {
  fs::create_directories(state_);
  fs::create_directories(work_ / "elsewhere");
  test::write_file(work_ / "elsewhere/hook-state.json", R"({"id":"c1","status":"complete","files":["precious"]})");
  test::write_file(work_ / "elsewhere/precious", "data\n");
  fs::create_directory_symlink(work_ / "elsewhere", state_ + "/c1");
  EXPECT_THROW(cleanup_hook("c1", state_), Error);
  EXPECT_TRUE(fs::exists(work_ / "elsewhere/precious"));
}

TEST_F(Hook, CleanupNeverFollowsStateFileEntriesOutOfItsDirectory) {
  json output = hook("c1", block_list(layer(1)));
  std::string dir = output["dir"];
  test::write_file(work_ / "precious", "data\n");
  json state = json::parse(test::read_file(dir + "/hook-state.json"));
  state["files"].push_back("../../precious");
  state["files"].push_back("../precious");
  state["dirs"].push_back("..");
  test::write_file(dir + "/hook-state.json", state.dump());
  cleanup_hook("c1", state_);
  EXPECT_TRUE(fs::exists(work_ / "precious"));
  EXPECT_TRUE(fs::exists(state_));
}

TEST_F(Hook, ARetryReturnsTheSameAnswerAndADifferentListIsRefused) {
  json first = hook("c1", block_list(layer(1)));
  json second = hook("c1", block_list(layer(1)));
  EXPECT_EQ(first, second);
  EXPECT_THAT([&] {
    try {
      hook("c1", block_list(layer(2)));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("different mount list"));
}

TEST_F(Hook, CleanupFinishesAnInterruptedHook) {
  // A hook killed after creating its directory and part of a compose output.
  std::string dir = state_ + "/c1";
  fs::create_directories(dir + "/lowers");
  test::write_file(dir + "/hook-state.json",
                   R"({"version":1,"id":"c1","status":"building","dirs":["lowers"]})");
  test::write_file(dir + "/lowers/disk.vmdk", "partial");
  test::write_file(dir + "/.hook.json.tmp-1234abcd", "partial");
  auto report = cleanup_hook("c1", state_);
  EXPECT_THAT(report.left, ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists(dir));
  // And the id can be used again.
  EXPECT_NO_THROW(hook("c1", block_list(layer(1))));
}

TEST_F(Hook, CliReadsStdinPrintsJsonAndCleansUp) {
  auto result = test::cli({"hook", "--id", "cli1", "--state-dir", state_}, block_list(layer(1)));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  json output = json::parse(result.out);
  EXPECT_EQ(output["id"], "cli1");
  EXPECT_EQ(output["disks"].size(), 2u);
  EXPECT_EQ(output, json::parse(test::read_file(state_ + "/cli1/hook.json")));

  test::write_file(work_ / "list.json", block_list(layer(1)));
  auto from_file = test::cli({"hook", "--id", "cli1", "--state-dir", state_, "--mounts", work_ / "list.json"});
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_EQ(json::parse(from_file.out), output);

  auto cleanup = test::cli({"hook", "cleanup", "--id", "cli1", "--state-dir", state_});
  ASSERT_EQ(cleanup.exit_code, 0) << cleanup.err;
  EXPECT_FALSE(fs::exists(state_ + "/cli1"));
  auto cleanup_again = test::cli({"hook", "cleanup", "--id", "cli1", "--state-dir", state_});
  EXPECT_EQ(cleanup_again.exit_code, 0) << cleanup_again.err;
}

TEST_F(Hook, CliErrorsNameTheMountAndExitNonZero) {
  std::string list = R"([{"type":"tmpfs","source":"none"}])";
  auto result = test::cli({"hook", "--id", "cli2", "--state-dir", state_}, list);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("mount 0 (type 'tmpfs')"));
  EXPECT_TRUE(result.out.empty());
  EXPECT_FALSE(fs::exists(state_));
  auto bad_id = test::cli({"hook", "--id", "../x", "--state-dir", state_}, block_list(layer(1)));
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_THAT(bad_id.err, HasSubstr("container id"));
}

}  // namespace
}  // namespace evmdk::host
