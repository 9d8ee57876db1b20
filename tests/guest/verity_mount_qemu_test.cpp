// The guest driver's dm-verity path end to end: two layers composed in gpt mode with
// --verity=on, the VMDK attached to a 6.1 guest, and `erofs-vmdk guest mount` given compose's
// storage.json as written. Each lower must be mounted from its own dm-verity device, a file
// reads back through the overlay, and `guest teardown` removes every dm device. Then one byte of
// the top layer's file data is flipped (after compose, in the file the VMDK extent points at)
// and the guest boots again: the mount succeeds (activation reads only the first block), the
// read of that file fails with an I/O error, `guest status` names lower-0 as the corrupted
// layer, and teardown still leaves no dm device behind.
#include <gmock/gmock.h>

#include "../qemu/scenario.h"
#include "../qemu/verity_disk.h"

namespace evmdk::qemu {
namespace {

class VerityMount : public QemuTest {};

// Shell helpers for both boots: what dm devices exist, and whether each lower is on one.
constexpr std::string_view kVerityHelpers = R"SH(
R=/run/containers/c1/rootfs
dm_devices() { for d in /sys/block/dm-*; do [ -e "$d" ] && echo "${d##*/}"; done; }
no_dm_left() {
  listed=$(erofs-vmdk verity list 2>&1) || { echo "verity list failed: $listed"; return 1; }
  [ -z "$listed" ] || { echo "verity list: $listed"; return 1; }
  blocks=$(dm_devices)
  [ -z "$blocks" ] || { echo "still in /sys/block: $blocks"; return 1; }
}
# Every erofs mount's source is a /dev/mapper node whose name is an active dm device.
lowers_on_dm() {
  n=0
  for source in $(grep ' erofs ' /proc/mounts | cut -d' ' -f1); do
    case "$source" in /dev/mapper/*) ;; *) echo "lower from $source, not /dev/mapper"; return 1;; esac
    found=""
    for d in /sys/block/dm-*/dm/name; do
      [ -f "$d" ] && [ "$(cat "$d")" = "${source#/dev/mapper/}" ] && found=${d%/dm/name}
    done
    [ -n "$found" ] || { echo "$source is not an active dm device ($(dm_devices))"; return 1; }
    echo "$source=${found##*/}"
    n=$((n + 1))
  done
  [ "$n" -eq 2 ] || { echo "$n erofs mounts, expected 2"; return 1; }
}
)SH";

TEST_F(VerityMount, DriverMountsEachLowerThroughDmVerityAndAFlippedByteFailsTheRead) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_verity_disk(path("disk"));
  // What the guest and QEMU get: the files compose wrote.
  auto disk = read_composed_disk(path("disk/out"));
  for (const auto& storage : disk.storages) {
    ASSERT_THAT(storage.dump(), ::testing::HasSubstr("X-kata.dmverity.roothash="));
  }

  GuestConfig first = config("verity-mount-good");
  first.extra_qemu_args = disk.qemu_args;
  auto job = scenario_job(disk.storages.dump(2), std::string(kVerityHelpers) + R"SH(
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_check lowers-on-dm lowers_on_dm
evmdk_check read-big cmp "$R/data/big" /job/big
evmdk_expect_eq top-wins "$(cat $R/etc/motd)" "top layer"
evmdk_expect_eq bottom-visible "$(cat $R/etc/os-release)" "ID=evmdk"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check no-dm-left no_dm_left
evmdk_check_clean after-teardown
)SH");
  job.files["big"] = verity_big_file();
  auto outcome = run_guest(env_, first, job);
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks({"mount", "lowers-on-dm", "read-big",
                                                      "top-wins", "bottom-visible", "teardown",
                                                      "no-dm-left"},
                                                     {"after-teardown"}));

  // Flip one byte of top.erofs's file data, after compose: the disk's extent reads this file.
  corrupt_verity_big_file(path("disk"));

  GuestConfig second = config("verity-mount-bad");
  second.extra_qemu_args = disk.qemu_args;
  auto bad = scenario_job(disk.storages.dump(2), std::string(kVerityHelpers) + R"SH(
# The flipped byte is far from the first block, which activation reads: the mount succeeds.
evmdk_check mount evmdk_guest_mount c1 "$R" || exit 1
evmdk_check lowers-on-dm lowers_on_dm
if cat "$R/data/big" > /dev/null 2> /tmp/err; then
  evmdk_result read-fails FAIL "the corrupted file read returned data"
elif grep -q "Input/output error" /tmp/err; then
  evmdk_result read-fails PASS "$(cat /tmp/err)"
else
  evmdk_result read-fails FAIL "read failed without EIO: $(cat /tmp/err)"
fi
evmdk_expect_eq intact-file-reads "$(cat $R/etc/os-release)" "ID=evmdk"
# Which layer the EIO came from: guest status names it.
erofs-vmdk guest status --id c1 --base "$EVMDK_BASE" > /tmp/status
evmdk_check status-names-layer grep -q "lower-0: dm-verity found corrupted data" /tmp/status
evmdk_expect_eq only-lower-0-corrupted "$(grep -c '"state": "corrupted"' /tmp/status)" "1"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check no-dm-left no_dm_left
evmdk_check_clean after-teardown
)SH");
  auto outcome2 = run_guest(env_, second, bad);
  EVMDK_EXPECT_GUEST_PASSED(outcome2, expected_checks({"mount", "lowers-on-dm", "read-fails",
                                                       "intact-file-reads", "status-names-layer",
                                                       "only-lower-0-corrupted", "teardown",
                                                       "no-dm-left"},
                                                      {"after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
