// The hook end to end: a containerd block-mode mount list (mkfs/ext4 for an rwlayer.img that
// does not exist yet, three erofs layers, format/mkdir/overlay) goes through the real
// `erofs-vmdk hook`; every disk it prints is attached to a QEMU guest with the QEMU arguments it
// printed, and the guest mounts the rootfs from the hook's storages, unchanged. The guest must
// see the merged view containerd meant, and what it writes must land in the ext4 upper the hook
// created on the host.
#include <filesystem>

#include "containerd_mounts.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HookQemu : public QemuTest {
 protected:
  // format_args: more hook arguments (--disk-format raw --allow-copy); expected_format: what
  // the lower disk entry must say.
  void run_block_mode_hook(const std::vector<std::string>& format_args,
                           const std::string& expected_format);
};

TEST_F(HookQemu, BlockModeHookOutputDrivesTheGuestRootfs) { run_block_mode_hook({}, "vmdk"); }

// The same with the lower disk as a raw image (disk.img attached with format=raw); the temp
// directory need not have reflinks, so copying is allowed.
TEST_F(HookQemu, BlockModeHookWithRawDiskFormatDrivesTheGuestRootfs) {
  run_block_mode_hook({"--disk-format", "raw", "--allow-copy"}, "raw");
}

void HookQemu::run_block_mode_hook(const std::vector<std::string>& format_args,
                                   const std::string& expected_format) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("debugfs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  EVMDK_REQUIRE_CLI("hook");
  auto layers = make_three_layers(temp_.path(), env_.busybox);  // top first

  // The list containerd's EROFS snapshotter returns in block mode; the upper image is created
  // by the hook (containerd's mount manager would otherwise).
  const std::string rwlayer = path("snapshots/9/rwlayer.img");
  fs::create_directories(path("snapshots/9"));
  json list = test::containerd_block_mode_list(rwlayer, 67108864, layers);
  test::write_file(path("mounts.json"), list.dump(2));
  ASSERT_FALSE(fs::exists(rwlayer));

  const std::string state = path("state");
  std::vector<std::string> hook_args = {"hook", "--id", "c1", "--state-dir", state, "--mounts",
                                        path("mounts.json")};
  hook_args.insert(hook_args.end(), format_args.begin(), format_args.end());
  auto hook = test::cli(hook_args);
  ASSERT_EQ(hook.exit_code, 0) << hook.out << hook.err;
  json output = json::parse(hook.out);
  ASSERT_TRUE(fs::exists(rwlayer)) << "the hook did not create the upper image";

  // Attach every disk the hook lists, exactly as it says to (its -drive/-device arguments).
  GuestConfig boot = config("hook");
  ASSERT_EQ(output.at("disks").size(), 2u) << output.dump(2);
  bool saw_upper = false;
  for (const auto& disk : output.at("disks")) {
    if (disk.at("role") == "upper") {
      saw_upper = true;
      EXPECT_EQ(disk.at("path"), rwlayer);
      EXPECT_FALSE(disk.at("read_only").get<bool>());
    } else {
      EXPECT_TRUE(disk.at("read_only").get<bool>());
      EXPECT_EQ(disk.at("format"), expected_format);
    }
    for (const auto& arg : disk.at("qemu").at("drive_args")) {
      boot.extra_qemu_args.push_back(arg.get<std::string>());
    }
  }
  ASSERT_TRUE(saw_upper) << output.dump(2);

  auto paths = mount_path_checks(env_, "c1", FlatPath::kNone);
  auto job = scenario_job(output.at("storages").dump(2), R"SH(
R=/run/containers/c1/rootfs
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
)SH" + paths.script + std::string(kThreeLayerViewScript) + R"SH(
evmdk_check upper-is-ext4-rw sh -c "grep ' ext4 rw,' /proc/mounts"
evmdk_check write sh -c "echo 'written by the guest' > $R/etc/written && sync && test \"\$(cat $R/etc/written)\" = 'written by the guest'"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  auto outcome = run_guest(env_, boot, job);
  auto checks = three_layer_view_checks();
  checks.insert(checks.end(), {"mount", "upper-is-ext4-rw", "write", "teardown"});
  checks.insert(checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));

  // On the host: the guest's write is in the ext4 image the hook created, under the upperdir.
  auto upper_file = test::run({"debugfs", "-R", "cat /upper/etc/written", rwlayer});
  ASSERT_EQ(upper_file.exit_code, 0) << upper_file.err;
  EXPECT_EQ(upper_file.out, "written by the guest\n") << upper_file.err;

  auto cleanup = test::cli({"hook", "cleanup", "--id", "c1", "--state-dir", state});
  EXPECT_EQ(cleanup.exit_code, 0) << cleanup.out << cleanup.err;
  EXPECT_FALSE(fs::exists(state + "/c1"));
  EXPECT_TRUE(fs::exists(rwlayer)) << "the upper image is containerd's snapshot, not the hook's";
}

}  // namespace
}  // namespace evmdk::qemu
