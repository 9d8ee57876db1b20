// Issue 12 in a real guest: a hostile storage list is refused by `erofs-vmdk guest mount`
// before anything is mounted. Two refusals on one composed disk (three layers + ext4 upper):
// an injected overlay option (lowerdir+=/etc would show guest files in the container), and
// unprotected lowers under a guest policy file that requires dm-verity. Each must name what
// it refused and leave no mount, loop or dm device; the same disk then mounts and tears down
// cleanly under the default policy, so the refusals are the policy's doing.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class GuestTrust : public ComposedDiskTest {};

TEST_F(GuestTrust, HostileStorageListsAreRefusedLeavingNothingMounted) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_three_layers();
  nlohmann::json injected = nlohmann::json::parse(guest_storage_json(disk_));
  injected[0]["options"].push_back("X-erofs-vmdk.overlay-option=lowerdir+=/etc");

  auto outcome = boot(disk_config("guest-trust"), R"SH(
R=/run/containers/trust/rootfs
refusal=$(erofs-vmdk guest mount --storages /job/injected.json --id trust --rootfs "$R" --base "$EVMDK_BASE" 2>&1); rc=$?
echo "injected overlay option: status $rc: $refusal"
evmdk_check injected-refused test "$rc" -ne 0
evmdk_check injected-names-option sh -c 'echo "$1" | grep -q "X-erofs-vmdk.overlay-option=lowerdir+=/etc"' _ "$refusal"
evmdk_check injected-nothing-mounted sh -c "! grep -q -e ' $R ' -e ' $EVMDK_BASE/' /proc/mounts"
evmdk_check_clean after-injected

refusal=$(erofs-vmdk guest mount --storages /job/storage.json --policy /job/policy.json --id trust --rootfs "$R" --base "$EVMDK_BASE" 2>&1); rc=$?
echo "unprotected lowers under require_verity: status $rc: $refusal"
evmdk_check unverified-refused test "$rc" -ne 0
evmdk_check unverified-names-rule sh -c 'echo "$1" | grep -q "requires dm-verity on every lower"' _ "$refusal"
evmdk_check unverified-nothing-mounted sh -c "! grep -q -e ' $R ' -e ' $EVMDK_BASE/' /proc/mounts"
evmdk_check_clean after-unverified

evmdk_check default-policy-mounts evmdk_guest_mount trust "$R"
evmdk_expect_eq default-policy-view "$(cat $R/etc/motd)" "top layer greeting"
evmdk_check journal-root-only sh -c "ls -ld $EVMDK_BASE/.journals | grep -q '^drwx------'"
evmdk_check teardown evmdk_guest_teardown trust "$R"
evmdk_check_clean after-teardown
)SH", {{"injected.json", injected.dump(2)}, {"policy.json", R"({"require_verity": true})"}});
  EVMDK_EXPECT_GUEST_PASSED(
      outcome, expected_checks({"injected-refused", "injected-names-option", "injected-nothing-mounted",
                                "unverified-refused", "unverified-names-rule", "unverified-nothing-mounted",
                                "default-policy-mounts", "default-policy-view", "journal-root-only", "teardown"},
                               {"after-injected", "after-unverified", "after-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
