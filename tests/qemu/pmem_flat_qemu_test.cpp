// Issue 18 scenario (b): a flat (fsmeta + two blobs) disk as ONE virtio-pmem device, through
// the real `erofs-vmdk guest mount`. The guest's kernel decides: with EROFS flat-device mode
// (6.4+; the 6.12 lanes) the one pmem device is mounted directly with dax=always, mountinfo
// confirms DAX, no loop device is used and the rootfs reads back. Without it (6.1) the only
// other way, loop slices + device=, cannot do DAX: the storage's dax-fallback=error refuses
// before anything is mounted, naming the kernel and what works instead; warn mounts through
// the slices without DAX and reports the warning.
#include "flat_fixture.h"
#include "pmem_compose.h"

namespace evmdk::qemu {
namespace {

constexpr std::string_view kShell = R"SH(
# mount_storages FILE ID ROOTFS: guest mount with /job/FILE; the report in
# /run/evmdk-mount-ID.json (for evmdk_mount_field), stderr in /run/ID.err.
mount_storages() {
  erofs-vmdk guest mount --storages "/job/$1" --id "$2" --rootfs "$3" --base "$EVMDK_BASE" \
    > "/run/evmdk-mount-$2.json" 2> "/run/$2.err"
}
count_in() { grep -c -- "$1" "$2"; }
loop_slices() {
  n=0; for b in /sys/block/loop*/loop/backing_file; do [ -f "$b" ] && n=$((n + 1)); done; echo $n
}
content_checks() {  # PREFIX ROOTFS
  for f in first.bin second.bin hostname; do evmdk_check "$1-content-$f" cmp "$2/$f" "/job/expected-$f"; done
}
)SH";

class PmemFlat : public QemuTest {
 protected:
  void SetUp() override {
    QemuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    EVMDK_REQUIRE_TOOLS("fsck.erofs");
    EVMDK_REQUIRE_CLI("guest", "mount");
  }
};

TEST_F(PmemFlat, FlatPmemDiskMountsWithDaxInFlatDeviceModeElseAsTheStorageSays) {
  const std::string work = temp_.path();
  // Real mkfs.erofs images: chunk-based files (DAX-able, no inlined tails) in two blobs.
  auto fixture = make_two_device_flat(work, "6c0ffee0-0000-4000-8000-0000000fda7a");
  auto disk =
      compose_pmem_disk(work + "/disk", "flat", {fixture.fsmeta, fixture.blob1, fixture.blob2});
  ASSERT_EQ(disk.storages.size(), 1u) << disk.storages.dump(2);
  make_ext4_disk(path("upper.img"), 32, work);

  GuestConfig cfg = config("pmem-flat");
  cfg.timeout = std::chrono::seconds(600);
  cfg.extra_modules = pmem_module_names();
  cfg.pmem_devices = {disk.device};
  cfg.drives = {upper_drive(path("upper.img"))};

  nlohmann::json error = with_dax_fallback(disk.storages, "error");
  nlohmann::json warn = with_dax_fallback(disk.storages, "warn");
  error.push_back(upper_storage());
  warn.push_back(upper_storage());

  const bool flat_device_mode = env_.kernel_major_minor() >= std::pair{6, 4};
  std::string script(kShell);
  std::vector<std::string> checks;
  std::vector<std::string> clean;
  if (flat_device_mode) {
    script += R"SH(
R=/run/rootfs-flat
evmdk_check mount mount_storages error.json c1 $R || { cat /run/c1.err; exit 1; }
evmdk_expect_eq flat-device-mode "$(evmdk_mount_field c1 flat_device_mode)" true
evmdk_expect_eq dax-confirmed "$(count_in '": "always"' /run/evmdk-mount-c1.json)" 1
evmdk_expect_eq no-warnings "$(count_in '"warnings": \[\]' /run/evmdk-mount-c1.json)" 1
evmdk_check mountinfo-dax sh -c "grep ' erofs /dev/pmem0 ' /proc/self/mountinfo | grep -q 'dax=always'"
evmdk_expect_eq no-loop-slices "$(loop_slices)" 0
content_checks dax $R
evmdk_check teardown evmdk_guest_teardown c1 $R
evmdk_check_clean c1
)SH";
    checks = {"mount",          "flat-device-mode", "dax-confirmed",
              "no-warnings",    "mountinfo-dax",    "no-loop-slices",
              "dax-content-first.bin", "dax-content-second.bin", "dax-content-hostname",
              "teardown"};
    clean = {"c1"};
  } else {
    script += R"SH(
E=/run/rootfs-error
evmdk_check_fails error-refused mount_storages error.json c1 $E
cat /run/c1.err
evmdk_check error-names-storage grep -q "storage #0 'pmem-scan': /dev/pmem0 holds a multi-device (flat, fsmeta) EROFS image" /run/c1.err
evmdk_check error-names-kernel grep -q "this kernel has no flat-device mode (guest kernel $(uname -r))" /run/c1.err
evmdk_check error-says-linux-6.4 grep -q "needs the kernel's EROFS flat-device mode (Linux 6.4 or later)" /run/c1.err
evmdk_check error-says-gpt grep -q "X-erofs-vmdk.dax-fallback=error refuses that: compose a gpt disk (--mode gpt)" /run/c1.err
evmdk_check error-nothing-mounted sh -c "! grep -q ' erofs ' /proc/self/mountinfo"
evmdk_check_clean c1

W=/run/rootfs-warn
evmdk_check warn-mount mount_storages warn.json c2 $W || { cat /run/c2.err; exit 1; }
cat /run/c2.err
evmdk_check warn-on-stderr grep -q "erofs-vmdk: warning: storage #0 'pmem-scan': /dev/pmem0 holds a multi-device" /run/c2.err
evmdk_check warn-says-slices grep -q "mounted through loop slices without DAX, as X-erofs-vmdk.dax-fallback=warn allows" /run/c2.err
evmdk_expect_eq warn-dax-fallback "$(count_in '": "fallback"' /run/evmdk-mount-c2.json)" 1
evmdk_expect_eq warn-flat-device-mode "$(evmdk_mount_field c2 flat_device_mode)" false
evmdk_check warn-no-dax-in-mountinfo sh -c "! grep ' erofs ' /proc/self/mountinfo | grep -q 'dax='"
evmdk_check warn-loop-slices test "$(loop_slices)" -ge 2
content_checks warn $W
evmdk_check warn-teardown evmdk_guest_teardown c2 $W
evmdk_check_clean c2
)SH";
    checks = {"error-refused",          "error-names-storage",
              "error-names-kernel",     "error-says-linux-6.4",
              "error-says-gpt",         "error-nothing-mounted",
              "warn-mount",             "warn-on-stderr",
              "warn-says-slices",       "warn-dax-fallback",
              "warn-flat-device-mode",  "warn-no-dax-in-mountinfo",
              "warn-loop-slices",       "warn-content-first.bin",
              "warn-content-second.bin", "warn-content-hostname",
              "warn-teardown"};
    clean = {"c1", "c2"};
  }
  GuestJob job = scenario_job(error.dump(2), script);
  job.files["error.json"] = error.dump(2);
  job.files["warn.json"] = warn.dump(2);
  for (const auto& [name, contents] : fixture.files) job.files["expected-" + name] = contents;
  auto outcome = run_guest(env_, cfg, job);
  print_mount_paths(env_, outcome, "flat pmem disk");
  for (const auto& prefix : clean) {
    for (const auto& check : kCleanChecks) checks.push_back(prefix + "-" + std::string(check.first));
  }
  EVMDK_ASSERT_GUEST_PASSED(outcome, checks);
}

}  // namespace
}  // namespace evmdk::qemu
