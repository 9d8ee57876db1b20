// The guest policy's hash allowlist applies to the algorithm a layer's verity tree really uses
// (its superblock), not only to what the storage's options claim: compose's dm-verity disk
// (sha256 trees) mounted in the 6.1 guest with the algorithm options taken out of the storages
// and `--verity-algorithm sha512`. The plan cannot see an algorithm, so the refusal must come
// at activation, from the policy's one check, naming the policy; the mount rolls back and
// leaves no mount, loop or dm device behind. The same storages then mount under the default
// policy (sha256 allowed).
#include <gmock/gmock.h>

#include "../qemu/scenario.h"
#include "../qemu/verity_disk.h"

namespace evmdk::qemu {
namespace {

using ::testing::HasSubstr;

class VerityPolicy : public QemuTest {};

TEST_F(VerityPolicy, SuperblockAlgorithmOutsideThePolicyIsRefusedAtActivation) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_verity_disk(path("disk"));
  auto disk = read_composed_disk(path("disk/out"));
  size_t dropped = 0;
  for (auto& storage : disk.storages) {
    auto& options = storage["options"];
    for (auto it = options.begin(); it != options.end();) {
      if (it->get<std::string>().rfind("X-kata.dmverity.algorithm=", 0) == 0) {
        it = options.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
  }
  ASSERT_EQ(dropped, 2u) << disk.storages.dump(2);

  GuestConfig cfg = config("verity-policy");
  cfg.extra_qemu_args = disk.qemu_args;
  auto job = scenario_job(disk.storages.dump(2), R"SH(
R=/run/containers/c1/rootfs
evmdk_check_fails sha512-only-refused erofs-vmdk guest mount --storages /job/storage.json \
  --id c1 --rootfs "$R" --base "$EVMDK_BASE" --verity-algorithm sha512
evmdk_check_clean after-refusal
evmdk_check mount-default-policy evmdk_guest_mount c1 "$R" || exit 1
evmdk_expect_eq top-wins "$(cat $R/etc/motd)" "top layer"
evmdk_check teardown evmdk_guest_teardown c1 "$R"
evmdk_check_clean after-teardown
)SH");
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected_checks({"sha512-only-refused", "mount-default-policy",
                                                      "top-wins", "teardown"},
                                                     {"after-refusal", "after-teardown"}));
  const std::string refusal = outcome.find("sha512-only-refused")->detail;
  SCOPED_TRACE("refusal: " + refusal);
  EXPECT_THAT(refusal, HasSubstr("dm-verity hash algorithm 'sha256' is not allowed by"));
  EXPECT_THAT(refusal, HasSubstr("(allowed: sha512)"));
  EXPECT_THAT(refusal, HasSubstr("layer "));  // whichever lower failed first
  EXPECT_THAT(refusal, HasSubstr("rolled back"));
}

}  // namespace
}  // namespace evmdk::qemu
