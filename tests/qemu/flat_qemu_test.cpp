// Scenario 3: a flat (fsmeta) disk with two device blobs on the 6.1 guest kernel, which has
// multi-device EROFS but no flat-device mode, so the guest driver must mount it through
// read-only loop slices of the disk passed as device= options.
#include "flat_fixture.h"
#include "qemu_test_util.h"

namespace evmdk::qemu {
namespace {

class FlatDisk : public QemuTest {};

// The fixture itself, mounted by hand in the guest with the blobs as separate disks: if this
// fails, the image is wrong, not erofs-vmdk.
TEST_F(FlatDisk, FixtureMountsWithDeviceOptionsOnGuestKernel) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  auto fixture = make_two_device_flat(temp_.path(), "6c0ffee0-0000-4000-8000-00000000f1a7");
  GuestConfig cfg = config("flat-fixture");
  cfg.drives = {{fixture.fsmeta, "raw", true, "evmdk-fsmeta"},
                {fixture.blob1, "raw", true, "evmdk-blob-1"},
                {fixture.blob2, "raw", true, "evmdk-blob-2"}};
  GuestJob job;
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  job.scenario = R"SH(
meta=$(evmdk_wait_serial evmdk-fsmeta); b1=$(evmdk_wait_serial evmdk-blob-1); b2=$(evmdk_wait_serial evmdk-blob-2)
mkdir -p /mnt/flat
evmdk_check no-device-refused sh -c '! mount -t erofs -o ro '"$meta"' /mnt/flat 2>/dev/null'
evmdk_check mounted mount -t erofs -o ro,device=$b1,device=$b2 "$meta" /mnt/flat
for f in first.bin second.bin hostname; do
  evmdk_check content-$f cmp /mnt/flat/$f /job/expected-$f
done
umount /mnt/flat
)SH";
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, {"no-device-refused", "mounted", "content-first.bin",
                                      "content-second.bin", "content-hostname"});
}

}  // namespace
}  // namespace evmdk::qemu
