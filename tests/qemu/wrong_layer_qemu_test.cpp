// Scenario 5: the disk attached to the guest does not hold the layer the host meant in one of
// its partitions (another disk with the same serial was attached). The guest driver must
// refuse the mount with an error naming what it expected, and leave nothing mounted.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

class WrongLayer : public ComposedDiskTest {};

TEST_F(WrongLayer, PartitionWithAnotherLayerIsRefusedAndNothingStaysMounted) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_CLI("guest", "mount");
  auto layers = make_three_layers(temp_.path(), env_.busybox);
  compose(host::ComposeMode::Gpt, layers);
  const ComposedDisk& meant = disk_;

  // Same shape, but partition 2 holds a different layer.
  test::make_tree(path("trees/other"), {{"opt/app/version", "intruder\n"}});
  test::make_erofs(path("trees/other"), path("other.erofs"), "0bad0bad-0000-4000-8000-000000000002");
  auto attached = compose_disk(path("attached"), host::ComposeMode::Gpt,
                               {layers[0], path("other.erofs"), layers[2]});
  // Attach it under the serial the storage objects name, as a mixed-up runtime would.
  std::vector<std::string> args;
  for (auto arg : attached.qemu_args) {
    for (size_t at; (at = arg.find("serial=" + attached.serial)) != std::string::npos;) {
      arg.replace(at, 7 + attached.serial.size(), "serial=" + meant.serial);
    }
    args.push_back(arg);
  }

  // What the guest must name in its refusal: the identity expected for lower-1.
  std::string expected_ids;
  for (const auto& storage : meant.storages) {
    if (storage.value("mount_point", "") != "lower-1") continue;
    for (const auto& option : storage.at("options")) {
      std::string o = option.get<std::string>();
      for (const char* key : {"X-erofs-vmdk.partuuid=", "X-erofs-vmdk.erofs-uuid="}) {
        if (o.rfind(key, 0) == 0) expected_ids += o.substr(std::string(key).size()) + "\n";
      }
    }
  }
  ASSERT_FALSE(expected_ids.empty()) << "compose's storage.json names no partuuid/erofs-uuid for lower-1:\n"
                                     << meant.storages.dump(2);

  GuestConfig cfg = disk_config("wrong-layer");
  cfg.extra_qemu_args = args;
  auto outcome = boot(cfg, R"SH(
R=/run/containers/wrong/rootfs
refusal=$(evmdk_guest_mount wrong "$R" 2>&1); rc=$?
echo "guest mount said (status $rc): $refusal"
evmdk_check mount-refused test "$rc" -ne 0
echo "expected identities: $(tr "\n" " " < /job/expected-ids)"
named=no
while read -r id; do
  [ -n "$id" ] && echo "$refusal" | grep -qi -- "$id" && named=yes
done < /job/expected-ids
evmdk_expect_eq error-names-expected-layer "$named" yes || echo "error was: $refusal"
evmdk_check rootfs-not-mounted sh -c "! grep -q ' $R ' /proc/mounts"
evmdk_check_clean after-refusal
evmdk_check teardown-after-refusal evmdk_guest_teardown wrong "$R"
)SH", {{"expected-ids", expected_ids}});
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount-refused", "error-names-expected-layer",
                                                      "rootfs-not-mounted", "teardown-after-refusal"},
                                                     {"after-refusal"}));
}

}  // namespace
}  // namespace evmdk::qemu
