// The issue's end-to-end scenario, through the composed disk: two protected layers composed in
// gpt mode with --verity=on, the VMDK attached to a 6.1 guest, each partition opened through
// dm-verity with exactly the options compose wrote in storage.json, mounted as EROFS and read.
// A second disk is composed the same way and then one byte of a layer's file data is flipped
// (after compose, in the layer file the VMDK extent points at): the guest still activates and
// mounts, but reading that file fails with an I/O error, and `verity check` names the block.
// No device-mapper device is left at the end.
#include "../qemu/scenario.h"
#include "../qemu/verity_disk.h"

namespace evmdk::qemu {
namespace {

// "lower-i partition-number -o option..." lines for the scenario script.
std::string options_file(const host::ComposeResult& result) {
  std::string out;
  for (size_t i = 0; i < result.storages.size(); ++i) {
    const auto& storage = result.storages[i];
    out += fmt::format("{} {}", storage.mount_point, *result.layers[i].partition_number);
    for (const auto& option : storage.options) {
      if (option.rfind("X-kata.dmverity", 0) == 0) out += " -o " + option;
    }
    out += "\n";
  }
  return out;
}

class VerityComposeQemu : public QemuTest {};

TEST_F(VerityComposeQemu, ComposedDiskVerifiesAndAFlippedByteFailsTheRead) {
  auto good = compose_verity_disk(path("good"), "evmdk-verity-good");
  auto bad = compose_verity_disk(path("bad"), "evmdk-verity-bad");
  size_t flip = corrupt_verity_big_file(path("bad"));

  GuestConfig cfg = config("verity-compose");
  cfg.drives = {{good.disk_path, good.disk_format, true, good.serial},
                {bad.disk_path, bad.disk_format, true, bad.serial}};
  // The lowers are opened by hand here, so storage.json is unused.
  auto job = scenario_job("[]", fmt::format(R"SH(
good=$(evmdk_wait_serial {good_serial}) && evmdk_result good-disk PASS "$good"
bad=$(evmdk_wait_serial {bad_serial}) && evmdk_result bad-disk PASS "$bad"
part() {{  # disk partition-number: wait for the node
  tries=50
  while [ ! -b "$1$2" ] && [ $tries -gt 0 ]; do usleep 100000; tries=$((tries - 1)); done
  echo "$1$2"
}}
mkdir -p /mnt/l
while read -r lower number options; do
  dev=$(part "$good" "$number")
  evmdk_check "good-$lower-open" erofs-vmdk verity open "good-$lower" "$dev" $options
  evmdk_check "good-$lower-mount" mount -t erofs -o ro "/dev/mapper/good-$lower" /mnt/l
  if [ "$lower" = lower-0 ]; then
    evmdk_check good-lower-0-read cmp /mnt/l/data/big /job/big
    # The teardown checks' dm probe must see a live device, by name (else no-dm proves nothing).
    if seen=$(evmdk_leftover_dm); then
      evmdk_result leftover-dm-sees-open-device FAIL "reported nothing while good-lower-0 is open"
    else
      case "$seen" in
        *"(good-lower-0)"*) evmdk_result leftover-dm-sees-open-device PASS "$seen" ;;
        *) evmdk_result leftover-dm-sees-open-device FAIL "$seen" ;;
      esac
    fi
  else
    evmdk_check good-lower-1-read grep -q ID=evmdk /mnt/l/etc/os-release
  fi
  evmdk_check "good-$lower-umount" umount /mnt/l
  evmdk_check "good-$lower-close" erofs-vmdk verity close "good-$lower"
done < /job/good.opts

read -r lower number options < /job/bad.opts
dev=$(part "$bad" "$number")
evmdk_check bad-open erofs-vmdk verity open bad-lower-0 "$dev" $options
evmdk_check bad-mount mount -t erofs -o ro /dev/mapper/bad-lower-0 /mnt/l
evmdk_check bad-small-file-still-reads grep -q "top layer" /mnt/l/etc/motd
if cat /mnt/l/data/big > /dev/null 2>/tmp/err; then
  evmdk_result bad-read-fails FAIL "read returned data"
elif grep -q "Input/output error" /tmp/err; then
  evmdk_result bad-read-fails PASS "$(evmdk_oneline "$(cat /tmp/err)")"
else
  evmdk_result bad-read-fails FAIL "$(evmdk_oneline "$(cat /tmp/err)")"
fi
evmdk_check bad-umount umount /mnt/l
evmdk_check bad-close erofs-vmdk verity close bad-lower-0
if erofs-vmdk verity check bad-check "$dev" $options 2>/tmp/err; then
  evmdk_result bad-check-fails FAIL "check passed"
elif grep -q "data fails verification at byte {flip_block_byte}" /tmp/err; then
  evmdk_result bad-check-fails PASS "$(evmdk_oneline "$(cat /tmp/err)")"
else
  evmdk_result bad-check-fails FAIL "$(evmdk_oneline "$(cat /tmp/err)")"
fi
left=$(erofs-vmdk verity list)
if [ -z "$left" ]; then evmdk_result no-dm-left PASS ""; else evmdk_result no-dm-left FAIL "$(evmdk_oneline "$left")"; fi
evmdk_check_clean at-end
)SH",
                             fmt::arg("good_serial", good.serial), fmt::arg("bad_serial", bad.serial),
                             fmt::arg("flip_block_byte", flip / 4096 * 4096)));
  job.files["good.opts"] = options_file(good);
  job.files["bad.opts"] = options_file(bad);
  job.files["big"] = verity_big_file();
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(
      outcome, expected_checks({"good-disk", "bad-disk", "good-lower-0-open", "good-lower-0-mount",
                                "good-lower-0-read", "leftover-dm-sees-open-device", "good-lower-0-umount", "good-lower-0-close",
                                "good-lower-1-open", "good-lower-1-mount", "good-lower-1-read",
                                "good-lower-1-umount", "good-lower-1-close", "bad-open",
                                "bad-mount", "bad-small-file-still-reads", "bad-read-fails",
                                "bad-umount", "bad-close", "bad-check-fails", "no-dm-left"},
                               {"at-end"}));
}

}  // namespace
}  // namespace evmdk::qemu
