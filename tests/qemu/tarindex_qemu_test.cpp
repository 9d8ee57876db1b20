// Tar-index layers in a real guest (issue 14 item 1): the mount lists containerd 2.2.4
// returned with enable_tar_index = true (tests/data/fixtures/containerd-2.2.4/lists/tarindex-*)
// over its real tar-index layers go through `erofs-vmdk hook`; the disks it prints are
// attached, and the guest mounts three containers from its storages: an active snapshot of
// four layers (a GPT disk, memory-backed upper), a view of the four (read-only overlay) and an
// active snapshot of one layer (a raw disk). Each layer's one device is its own tar, mapped
// inside its partition: kernels with flat-device mode (6.12) mount the partition directly,
// 6.1 (which also refuses the empty device tag) through a read-only loop slice at the mapped
// offset passed as device=. The test prints which path each kernel took. A core scenario:
// scripts/test-lanes.sh runs it on every QEMU x kernel lane.
#include <filesystem>

#include "real_fixtures.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class TarIndexQemu : public QemuTest {
 protected:
  // The snapshotter's directory: the real tar-index layers at N/layer.erofs, and the
  // directories the active snapshots name for their host upper (5, 7).
  std::string make_snapshots() {
    std::string snapshots = path("snapshots");
    for (int n = 1; n <= test::kTarIndexLayers; ++n) {
      fs::create_directories(fmt::format("{}/{}", snapshots, n));
      fs::copy_file(test::tarindex_layer(n), fmt::format("{}/{}/layer.erofs", snapshots, n));
    }
    for (int n : {5, 7}) {
      fs::create_directories(fmt::format("{}/{}/fs", snapshots, n));
      fs::create_directories(fmt::format("{}/{}/work", snapshots, n));
    }
    return snapshots;
  }

  // Runs the hook for `id` on fixture list `list`, adds its disks to `boot`; its storages.
  json hook(const std::string& id, const std::string& list, const std::string& snapshots,
            GuestConfig& boot) {
    std::string mounts = path(id + "-mounts.json");
    test::write_file(mounts, test::read_fixture_list(test::containerd22_list(list), snapshots));
    auto result = test::cli({"hook", "--id", id, "--state-dir", path("state"), "--mounts", mounts});
    EXPECT_EQ(result.exit_code, 0) << list << ": " << result.out << result.err;
    if (result.exit_code != 0) return json::array();
    json output = json::parse(result.out);
    for (const auto& disk : output.at("disks")) {
      EXPECT_TRUE(disk.at("read_only").get<bool>()) << disk.dump();
      for (const auto& arg : disk.at("qemu").at("drive_args")) boot.extra_qemu_args.push_back(arg);
    }
    return output.at("storages");
  }
};

// Shell checks of the merged four-layer view at $R, named PREFIX-...; expected files are in
// /job/expected-<i>.
std::string merged_view_checks(const std::string& prefix, std::vector<std::string>& names) {
  std::string script;
  size_t i = 0;
  for (const auto& [file, contents] : test::tarindex_merged_files()) {
    (void)contents;
    script +=
        fmt::format("evmdk_check {0}-file-{1} cmp \"$R/{2}\" /job/expected-{1}\n", prefix, i, file);
    names.push_back(fmt::format("{}-file-{}", prefix, i++));
  }
  i = 0;
  for (const auto& hidden : test::tarindex_hidden_paths()) {
    script += fmt::format("evmdk_check {}-hidden-{} sh -c '! test -e \"$0\"' \"$R/{}\"\n", prefix,
                          i, hidden);
    names.push_back(fmt::format("{}-hidden-{}", prefix, i++));
  }
  for (const auto& [file, digest] : test::tarindex_file_digests()) {
    std::string name = prefix + "-sha256-" + fs::path(file).stem().string();
    script += fmt::format("evmdk_expect_eq {} \"$(sha256sum \"$R/{}\" | cut -d' ' -f1)\" {}\n",
                          name, file, digest);
    names.push_back(name);
  }
  return script;
}

TEST_F(TarIndexQemu, HookOutputOfTheRealListsMountsOnGuestKernel) {
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  std::string snapshots = make_snapshots();
  GuestConfig boot = config("tarindex");
  json active = hook("ti-active", "tarindex-active-4layers", snapshots, boot);
  json view = hook("ti-view", "tarindex-view-4layers", snapshots, boot);
  json one = hook("ti-one", "tarindex-active-1layer", snapshots, boot);
  ASSERT_FALSE(HasFailure());

  auto job = scenario_job(active.dump(2), "");
  job.files["view.json"] = view.dump(2);
  job.files["one.json"] = one.dump(2);
  size_t i = 0;
  for (const auto& [file, contents] : test::tarindex_merged_files()) {
    (void)file;
    job.files[fmt::format("expected-{}", i++)] = contents;
  }

  std::vector<std::string> checks{"active-mount",       "active-write", "view-mount",
                                  "view-write-refused", "one-mount",    "one-content",
                                  "one-sha256-big",     "tar-slices",   "teardown-active",
                                  "teardown-view",      "teardown-one"};
  auto active_paths = mount_path_checks(env_, "ti-active", FlatPath::kNative, "active-");
  auto view_paths = mount_path_checks(env_, "ti-view", FlatPath::kNative, "view-");
  auto one_paths = mount_path_checks(env_, "ti-one", FlatPath::kNative, "one-");
  for (const auto* paths : {&active_paths, &view_paths, &one_paths}) {
    checks.insert(checks.end(), paths->names.begin(), paths->names.end());
  }
  // 6.1: one read-only loop slice per layer (its tar), 4 + 4 + 1; flat-device mode: none.
  std::string slices = active_paths.native ? "evmdk_expect_eq tar-slices \"$bound\" 0\n"
                                           : "evmdk_expect_eq tar-slices \"$bound\" 9\n";
  job.scenario += R"SH(
R=/run/containers/ti-active/rootfs
evmdk_check active-mount evmdk_guest_mount ti-active "$R" || exit 1
)SH" + active_paths.script +
                  merged_view_checks("active", checks) + R"SH(
evmdk_check active-write sh -c "echo written > $R/etc/hostname && test \"\$(cat $R/etc/hostname)\" = written"
R=/run/containers/ti-view/rootfs
EVMDK_STORAGES=/job/view.json
evmdk_check view-mount evmdk_guest_mount ti-view "$R" || exit 1
)SH" + view_paths.script +
                  merged_view_checks("view", checks) + R"SH(
evmdk_check view-write-refused sh -c "! echo x > $R/etc/hostname 2>/dev/null"
R=/run/containers/ti-one/rootfs
EVMDK_STORAGES=/job/one.json
evmdk_check one-mount evmdk_guest_mount ti-one "$R" || exit 1
)SH" + one_paths.script +
                  R"SH(
evmdk_expect_eq one-content "$(cat $R/etc/hostname)" base
evmdk_expect_eq one-sha256-big "$(sha256sum $R/big.bin | cut -d' ' -f1)" 73ebf14290b3e7df859910a033d20cf8fc24306527e754f96d872c3f4cb2da1c
bound=0
for b in /sys/block/loop*/loop/backing_file; do [ -f "$b" ] && bound=$((bound + 1)); done
)SH" + slices + R"SH(
evmdk_check teardown-active evmdk_guest_teardown ti-active /run/containers/ti-active/rootfs
evmdk_check teardown-view evmdk_guest_teardown ti-view /run/containers/ti-view/rootfs
evmdk_check teardown-one evmdk_guest_teardown ti-one /run/containers/ti-one/rootfs
evmdk_check_clean after-teardown
)SH";
  auto outcome = run_guest(env_, boot, job);
  print_mount_paths(env_, outcome, "tar-index");
  if (const auto* bound = outcome.find("tar-slices")) {
    std::fprintf(stderr,
                 "[mount path] tar-index, guest kernel %s: %s loop slices for 9 layers (%s)\n",
                 env_.kernel_version.c_str(), bound->detail.c_str(),
                 active_paths.native ? "direct: flat-device mode" : "loop slice + device=");
  }
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));

  for (const char* id : {"ti-active", "ti-view", "ti-one"}) {
    auto cleanup = test::cli({"hook", "cleanup", "--id", id, "--state-dir", path("state")});
    EXPECT_EQ(cleanup.exit_code, 0) << cleanup.out << cleanup.err;
  }
}

}  // namespace
}  // namespace evmdk::qemu
