// The composed disk attached over virtio-scsi instead of virtio-blk (a runtime that uses Kata's
// "scsi" driver): the guest finds it by Kata's SCSI address `<id>:<lun>` and, with the same
// storages, by `serial:<S>` (on SCSI the serial is in VPD page 0x80, not /sys/block/*/serial),
// mounts the three layers' merged view, and tears down cleanly both times.
#include "scenario.h"

namespace evmdk::qemu {
namespace {

using nlohmann::json;

class ScsiDisk : public ComposedDiskTest {};

TEST_F(ScsiDisk, FoundBySCSIAddressAndBySerialMountsAndTearsDown) {
  EVMDK_REQUIRE_CLI("guest", "mount");
  compose_three_layers();
  GuestConfig cfg = config("scsi-disk");
  std::string descriptor = disk_.dir + "/disk.vmdk";
  cfg.extra_qemu_args = {
      "-device", "virtio-scsi-pci,id=scsi0",
      "-drive", "file=" + descriptor + ",format=vmdk,if=none,id=layers,readonly=on,force-share=on",
      "-device", "scsi-hd,drive=layers,bus=scsi0.0,channel=0,scsi-id=2,lun=0,serial=" + disk_.serial};
  cfg.drives = {upper_drive(path("upper.img"))};

  // The same storages with the lowers' source rewritten to the SCSI address, as a runtime that
  // hot-plugs over SCSI does (driver "scsi", source "<id>:<lun>").
  json by_address = json::parse(guest_storage_json(disk_));
  for (auto& storage : by_address) {
    if (storage.at("fstype") == "erofs") {
      storage["driver"] = "scsi";
      storage["source"] = "2:0";
    }
  }
  ASSERT_FALSE(disk_.serial.empty());
  auto job = scenario_job(guest_storage_json(disk_), "SERIAL=" + disk_.serial + R"SH(
R=/run/containers/scsi/rootfs
mount_with() {  # STORAGES
  erofs-vmdk guest mount --storages "$1" --id scsi --rootfs "$R" --base "$EVMDK_BASE"
}
evmdk_check mount-by-address mount_with /job/by-address.json || exit 1
evmdk_check lowers-on-scsi sh -c "grep ' erofs ' /proc/mounts | grep -q '^/dev/sd'"
evmdk_expect_eq address-top-wins "$(cat $R/opt/app/version)" "v3"
evmdk_check teardown-by-address evmdk_guest_teardown scsi "$R"
evmdk_check_clean after-address
# On SCSI the serial is only in VPD page 0x80: no /sys/block/sd*/serial to match.
evmdk_check serial-only-in-vpd sh -c '! cat /sys/block/sd*/serial 2>/dev/null | grep -q . && grep -aq "$0" /sys/block/sd*/device/vpd_pg80' "$SERIAL"
evmdk_check mount-by-serial mount_with /job/storage.json || exit 1
evmdk_expect_eq serial-top-wins "$(cat $R/opt/app/version)" "v3"
evmdk_expect_eq serial-whiteout-hides "$(ls $R/opt/app)" "tool
version"
evmdk_check teardown-by-serial evmdk_guest_teardown scsi "$R"
evmdk_check_clean after-serial
)SH");
  job.files["by-address.json"] = by_address.dump(2);
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(outcome, expected_checks({"mount-by-address", "lowers-on-scsi",
                                                      "address-top-wins", "teardown-by-address",
                                                      "serial-only-in-vpd", "mount-by-serial", "serial-top-wins",
                                                      "serial-whiteout-hides", "teardown-by-serial"},
                                                     {"after-address", "after-serial"}));
}

}  // namespace
}  // namespace evmdk::qemu
