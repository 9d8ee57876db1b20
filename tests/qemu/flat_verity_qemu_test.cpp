// dm-verity on a flat (fsmeta) disk, end to end on the 6.1 guest: the fsmeta and both device
// blobs are `verity format`-ed, composed with --verity=on (the trees go after the last device),
// and `erofs-vmdk guest mount` must read the fsmeta and each device through its own dm-verity
// device. Then one byte of blob 2 is flipped after compose: the mount still succeeds (the first
// block of every device verifies), the file holding that byte fails with EIO while every other
// file reads, `guest status` names the corrupted layer and device, and teardown leaves no dm
// device behind.
#include <gmock/gmock.h>

#include <filesystem>

#include "evmdk/host/verity/verity.h"
#include "evmdk/host/verity/verity_compose.h"
#include "flat_fixture.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;

class FlatVerity : public QemuTest {
 protected:
  ComposedDisk compose_protected(const TwoDeviceFlatFixture& f, const std::string& dir) {
    for (const auto& input : {f.fsmeta, f.blob1, f.blob2}) host::verity_format(input, {});
    host::ComposeOptions options;
    options.mode = host::ComposeMode::Flat;
    options.layers = {{f.fsmeta, {}}, {f.blob1, {}}, {f.blob2, {}}};
    options.output_dir = dir;
    auto report = host::apply_verity_policy(options, host::VerityPolicy::kOn);
    EXPECT_TRUE(report.unprotected().empty());
    host::compose(options);
    return read_composed_disk(dir);
  }
  // A guest with the composed disk and a fresh ext4 upper.
  GuestConfig guest_with(const std::string& name, const ComposedDisk& disk) {
    make_ext4_disk(path(name + "-upper.img"), 32, temp_.path());
    GuestConfig cfg = config(name);
    cfg.extra_qemu_args = disk.qemu_args;
    cfg.drives = {upper_drive(path(name + "-upper.img"))};
    return cfg;
  }
};

constexpr std::string_view kHelpers = R"SH(
R=/run/containers/fv/rootfs
dm_devices() { for d in /sys/block/dm-*; do [ -e "$d" ] && echo "${d##*/}"; done; }
# The fsmeta is mounted from its dm-verity device, and each device= option names one.
mounted_through_dm() {
  line=$(grep ' erofs ' /proc/mounts)
  echo "$line"
  case "$line" in /dev/mapper/evmdk-fv-lower-0\ *) ;; *) echo "fsmeta not from dm-verity"; return 1;; esac
  [ "$(ls /sys/block | grep -c '^dm-')" -eq 3 ] || { echo "dm devices: $(dm_devices)"; return 1; }
}
status() { erofs-vmdk guest status --id fv --base "$EVMDK_BASE"; }
)SH";

TEST_F(FlatVerity, EveryDeviceReadsThroughDmVerityAndAFlippedByteFailsItsFileNamingTheLayer) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1a8");
  auto disk = compose_protected(fixture, path("disk"));
  ASSERT_THAT(disk.storages.dump(), ::testing::HasSubstr("X-erofs-vmdk.device.2.dmverity.roothash="));
  GuestConfig first = guest_with("flat-verity-good", disk);
  // dm-verity needs device= options: loop slices even where flat-device mode exists.
  auto paths = mount_path_checks(env_, "fv", FlatPath::kDeviceSlices);
  auto job = scenario_job(guest_storage_json(disk), std::string(kHelpers) + R"SH(
evmdk_check mount evmdk_guest_mount fv "$R" || exit 1
)SH" + paths.script + R"SH(
for f in first.bin second.bin hostname; do
  evmdk_check content-$f cmp $R/$f /job/expected-$f
done
evmdk_check through-dm mounted_through_dm
evmdk_expect_eq status-verified "$(status | grep -c '"state": "verified"')" "3"
evmdk_check teardown evmdk_guest_teardown fv "$R"
evmdk_check_clean after-teardown
)SH");
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  auto outcome = run_guest(env_, first, job);
  std::vector<std::string> checks{"mount",      "content-first.bin", "content-second.bin",
                                  "content-hostname", "through-dm", "status-verified", "teardown"};
  checks.insert(checks.end(), paths.names.begin(), paths.names.end());
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks(checks, {"after-teardown"}));

  // Flip one byte in blob 2's fourth block (not its first, which activation reads), in the
  // file the disk's extent points at, and find which file of the image holds that block.
  std::string blob = test::read_file(fixture.blob2);
  const size_t block = 3 * 4096;
  ASSERT_GT(uint64_t{fixture.blob2_blocks}, 4u);
  std::string victim;
  for (const auto& [name, contents] : fixture.files) {
    if (contents.find(blob.substr(block, 256)) != std::string::npos) victim = name;
  }
  ASSERT_FALSE(victim.empty()) << "no file of the fixture holds blob 2's block 3";
  blob[block + 100] = static_cast<char>(blob[block + 100] ^ 0x10);
  test::write_file(fixture.blob2, blob);

  GuestConfig second = guest_with("flat-verity-bad", disk);
  auto bad = scenario_job(guest_storage_json(disk), std::string(kHelpers) + "VICTIM=" + victim +
                                                        R"SH(
evmdk_check mount evmdk_guest_mount fv "$R" || exit 1
if cat "$R/$VICTIM" > /dev/null 2> /tmp/err; then
  evmdk_result victim-read-fails FAIL "the corrupted $VICTIM read back without an error"
elif grep -q "Input/output error" /tmp/err; then
  evmdk_result victim-read-fails PASS "$(cat /tmp/err)"
else
  evmdk_result victim-read-fails FAIL "read failed without EIO: $(cat /tmp/err)"
fi
others_ok=yes
for f in first.bin second.bin hostname; do
  [ "$f" = "$VICTIM" ] && continue
  cmp "$R/$f" "/job/expected-$f" || others_ok="no ($f)"
done
evmdk_expect_eq other-files-read "$others_ok" "yes"
status > /tmp/status
evmdk_check status-names-layer grep -q "lower-0 device 2: dm-verity found corrupted data" /tmp/status
evmdk_expect_eq only-device-2-corrupted "$(grep -c '"state": "corrupted"' /tmp/status)" "1"
evmdk_check teardown evmdk_guest_teardown fv "$R"
evmdk_check_clean after-teardown
)SH");
  for (const auto& [name, contents] : fixture.files) bad.files["expected-" + name] = contents;
  auto outcome2 = run_guest(env_, second, bad);
  EVMDK_EXPECT_GUEST_PASSED(outcome2, expected_checks({"mount", "victim-read-fails",
                                                       "other-files-read", "status-names-layer",
                                                       "only-device-2-corrupted", "teardown"},
                                                      {"after-teardown"}));
}

// A spec asking for the impossible (no superblock on a flat device), and a root hash that does
// not belong to device 1 (a storage spec tampered with, or a stale one): each mount is refused
// naming the device, and the rollback leaves no dm device, loop or mount behind (the fsmeta's
// verity device was already active when device 1 failed).
TEST_F(FlatVerity, BadDeviceVerityOptionsRefuseTheMountAndRollBack) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1a9");
  auto disk = compose_protected(fixture, path("disk"));
  bool replaced = false;
  for (auto& option : disk.storages[0]["options"]) {
    std::string text = option.get<std::string>();
    const std::string key = "X-erofs-vmdk.device.1.dmverity.roothash=";
    if (text.rfind(key, 0) == 0) {
      option = key + std::string(64, 'e');
      replaced = true;
    }
  }
  ASSERT_TRUE(replaced) << disk.storages.dump(2);
  // And a spec asking device 2 to be read without a verity superblock, which a flat disk
  // cannot do (the data would be taken from the disk start): refused before any activation.
  ComposedDisk no_superblock = disk;
  no_superblock.storages[0]["options"].push_back("X-erofs-vmdk.device.2.dmverity.no-superblock=true");
  GuestConfig cfg = guest_with("flat-verity-wrong-hash", disk);
  auto job = scenario_job(guest_storage_json(disk), std::string(kHelpers) + R"SH(
if erofs-vmdk guest mount --storages /job/no-superblock.json --id fv --rootfs "$R" --base "$EVMDK_BASE" > /tmp/nosb.out 2>&1; then
  evmdk_result no-superblock-refused FAIL "mounted a flat device without its verity superblock"
else
  evmdk_check no-superblock-refused grep -q "device 2: .*no-superblock is not supported" /tmp/nosb.out
fi
evmdk_check_clean after-no-superblock
if evmdk_guest_mount fv "$R" > /tmp/mount.out 2>&1; then
  evmdk_result mount-refused FAIL "mounted with a wrong root hash for device 1"
elif grep -q "device 1" /tmp/mount.out && grep -q "wrong root hash" /tmp/mount.out; then
  evmdk_result mount-refused PASS "$(cat /tmp/mount.out)"
else
  evmdk_result mount-refused FAIL "refused without naming device 1 and the root hash: $(cat /tmp/mount.out)"
fi
evmdk_check_clean after-refusal
)SH");
  job.files["no-superblock.json"] = guest_storage_json(no_superblock);
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"no-superblock-refused", "mount-refused"},
                                                     {"after-no-superblock", "after-refusal"}));
}

// A guest agent killed in the middle of a mount (SIGKILL right after the lowers, with every
// verity device active and the journal naming them): `guest teardown` afterwards removes every
// dm device, loop and mount it left, and a second mount of the same container then works.
TEST_F(FlatVerity, TeardownAfterACrashedMountRemovesEveryVerityDevice) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1aa");
  auto disk = compose_protected(fixture, path("disk"));
  GuestConfig cfg = guest_with("flat-verity-crash", disk);
  auto job = scenario_job(guest_storage_json(disk), std::string(kHelpers) + R"SH(
if EVMDK_GUEST_CRASH_AFTER=mount:lowers evmdk_guest_mount fv "$R" > /tmp/mount.out 2>&1; then
  evmdk_result crashed FAIL "the mount finished although a crash was injected"
else
  evmdk_check crashed grep -q "crash injected after step 'mount:lowers'" /tmp/mount.out
fi
evmdk_expect_eq dm-left-by-crash "$(ls /sys/block | grep -c '^dm-')" "3"
evmdk_check teardown evmdk_guest_teardown fv "$R"
evmdk_check_clean after-teardown
evmdk_check mount-again evmdk_guest_mount fv "$R"
evmdk_check content-again cmp "$R/hostname" /job/expected-hostname
evmdk_check teardown-again evmdk_guest_teardown fv "$R"
evmdk_check_clean at-end
)SH");
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"crashed", "dm-left-by-crash", "teardown",
                                                      "mount-again", "content-again", "teardown-again"},
                                                     {"after-teardown", "at-end"}));
}

}  // namespace
}  // namespace evmdk::qemu
