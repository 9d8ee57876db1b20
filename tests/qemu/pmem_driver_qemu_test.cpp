// Issue 18 through the real `erofs-vmdk guest mount`: a GPT disk composed for virtio-pmem
// (`compose --attach pmem`: its disk.img, storage.json and qemu.json "pmem" arguments as they
// are; pmem_compose.h), its lowers found without a serial (by scanning for their PARTUUIDs),
// mounted with dax=always and confirmed in mountinfo, overlaid with an ext4 upper; reading a
// 200 MiB file of the rootfs leaves the guest's Cached where it was, while the same disk over
// virtio-blk fills it. And the silent fallback (a partition not 4 KiB aligned, found by PCI
// address) reported as the storage says: dax-fallback=error fails naming the storage and rolls
// back, warn mounts and records the warning.
#include <fstream>

#include "pmem_compose.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kBigFileBytes = 200 * kMiB;
constexpr const char* kMisalignedPartUuid = "5e5e5e5e-2222-4000-8000-000000000001";

std::string sha256_file(const fs::path& path) {
  auto sum = test::run({"sha256sum", path.string()});
  if (sum.exit_code != 0 || sum.out.size() < 64) throw HarnessError("sha256sum: " + sum.err);
  return sum.out.substr(0, 64);
}

// The pmem lowers as virtio-blk storages of the same disk attached with `serial`: driver blk,
// no DAX markers (the comparison).
nlohmann::json as_blk(nlohmann::json storages, const std::string& serial) {
  for (auto& storage : storages) {
    storage["driver"] = "blk";
    storage["source"] = "serial:" + serial;
    nlohmann::json options = nlohmann::json::array();
    for (const auto& option : storage["options"]) {
      if (option.get<std::string>().rfind("X-erofs-vmdk.dax", 0) != 0) options.push_back(option);
    }
    storage["options"] = options;
  }
  return storages;
}

nlohmann::json misaligned_storage(const std::string& fallback) {
  return nlohmann::json::array(
      {{{"driver", "nvdimm"},
        {"driver_options", nlohmann::json::array()},
        {"source", "pmem-pci:0000:00:0c.0"},
        {"fstype", "erofs"},
        {"options",
         {"ro", "X-kata.multi-layer=true", "X-kata.overlay-lower", "X-kata.partition-number=1",
          std::string("X-erofs-vmdk.partuuid=") + kMisalignedPartUuid, "X-erofs-vmdk.dax=always",
          "X-erofs-vmdk.dax-fallback=" + fallback}},
        {"mount_point", "lower"}}});
}

// Cached growth while a file is read once (hashing it checks the content by the same read).
constexpr std::string_view kMeasureShell = R"SH(
cached_kib() { sed -n 's/^Cached: *\([0-9]*\) kB$/\1/p' /proc/meminfo; }
measure() {  # NAME FILE SHA256
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(cached_kib)
  sum=$(sha256sum "$2" | cut -d' ' -f1)
  after=$(cached_kib)
  evmdk_value "cached-kib-$1" $((after - before))
  evmdk_expect_eq "content-$1" "$sum" "$3"
}
# mount_storages FILE ID ROOTFS: guest mount with /job/FILE; stdout in /run/ID.json, stderr
# in /run/ID.err.
mount_storages() {
  erofs-vmdk guest mount --storages "/job/$1" --id "$2" --rootfs "$3" --base "$EVMDK_BASE" \
    > "/run/$2.json" 2> "/run/$2.err"
}
count_in() { grep -c -- "$1" "$2"; }
)SH";

class PmemDriver : public QemuTest {
 protected:
  void SetUp() override {
    QemuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    EVMDK_REQUIRE_TOOLS("sgdisk", "sha256sum");
  }
};

TEST_F(PmemDriver, GuestMountReadsPmemLowersThroughDaxAndReportsFallbacks) {
  const std::string work = temp_.path();
  write_noise_file(work + "/trees/top/big.bin", kBigFileBytes, 1);
  const std::string big_sha = sha256_file(work + "/trees/top/big.bin");
  test::make_tree(work + "/trees/top", {{"etc/layer", "top\n"}});
  test::make_tree(work + "/trees/base", {{"etc/layer", "base\n"}, {"etc/base-only", "base\n"}});
  std::vector<std::string> layers{work + "/top.erofs", work + "/base.erofs"};
  test::make_erofs(work + "/trees/top", layers[0], {}, {"-Enoinline_data"});
  test::make_erofs(work + "/trees/base", layers[1], {}, {"-Enoinline_data"});
  auto disk = compose_pmem_disk(work + "/disk", "gpt", layers);
  ASSERT_EQ(disk.storages.size(), 2u) << disk.storages.dump(2);
  for (const auto& storage : disk.storages) {
    EXPECT_EQ(storage["driver"], "nvdimm") << storage.dump();
    EXPECT_EQ(storage["source"], "pmem-scan") << storage.dump();
  }

  // One partition at sector 2049: 512-byte aligned, not 4 KiB: DAX silently falls back.
  test::make_tree(work + "/trees/misaligned", {{"etc/layer", "misaligned\n"}});
  test::make_erofs(work + "/trees/misaligned", work + "/misaligned.erofs", {}, {"-Enoinline_data"});
  const uint64_t layer_bytes = fs::file_size(work + "/misaligned.erofs");
  const std::string misaligned = work + "/misaligned.img";
  { std::ofstream create(misaligned, std::ios::binary | std::ios::trunc); }
  fs::resize_file(misaligned, round_up_to_pmem_alignment(2049 * 512 + layer_bytes + kMiB));
  auto part =
      test::run({"sgdisk", "-a", "1", "-n", fmt::format("1:2049:{}", 2049 + layer_bytes / 512 - 1),
                 "-u", std::string("1:") + kMisalignedPartUuid, misaligned});
  ASSERT_EQ(part.exit_code, 0) << part.out << part.err;
  {
    std::fstream out(misaligned, std::ios::binary | std::ios::in | std::ios::out);
    std::ifstream in(work + "/misaligned.erofs", std::ios::binary);
    out.seekp(2049 * 512);
    out << in.rdbuf();
    ASSERT_TRUE(out.flush());
  }

  make_ext4_disk(path("upper-pmem.img"), 32, work);
  make_ext4_disk(path("upper-blk.img"), 32, work);
  GuestConfig cfg = config("pmem-driver");
  cfg.memory_mib = 768;  // room for the 200 MiB the virtio-blk read puts in the page cache
  cfg.timeout = std::chrono::seconds(600);
  cfg.extra_modules = pmem_module_names();
  cfg.pmem_devices = {disk.device, {misaligned, 0, "0x0c"}};
  // The same raw disk over virtio-blk, the same lowers as blk storages.
  cfg.drives = {{disk.device.file, "raw", true, "evmdk-pmem-as-blk"},
                upper_drive(path("upper-pmem.img")),
                {path("upper-blk.img"), "raw", false, "evmdk-upper-blk"}};

  nlohmann::json pmem = disk.storages;  // compose's, as they are
  pmem.push_back(upper_storage());
  nlohmann::json blk = as_blk(disk.storages, "evmdk-pmem-as-blk");
  blk.push_back(upper_storage("evmdk-upper-blk"));
  GuestJob job = scenario_job(pmem.dump(2),
                              std::string(kMeasureShell) + fmt::format(R"SH(
R=/run/rootfs-pmem
evmdk_check pmem-mount evmdk_guest_mount c1 $R
evmdk_expect_eq pmem-dax-confirmed "$(count_in '": "always"' /run/evmdk-mount-c1.json)" 2
evmdk_expect_eq pmem-no-warnings "$(count_in '"warnings": \[\]' /run/evmdk-mount-c1.json)" 1
evmdk_check pmem-mountinfo-dax sh -c "grep ' erofs ' /proc/self/mountinfo | grep -c 'dax=always' | grep -qx 2"
evmdk_check pmem-lowers-on-pmem sh -c "grep ' erofs /dev/pmem' /proc/self/mountinfo | wc -l | grep -qx 2"
evmdk_check pmem-status-dax sh -c "erofs-vmdk guest status -i c1 -b $EVMDK_BASE | grep -c '\"dax\": true' | grep -qx 2"
evmdk_expect_eq pmem-view "$(cat $R/etc/layer) $(cat $R/etc/base-only)" "top base"
evmdk_check pmem-writable sh -c "echo written > $R/new && grep -q written $R/new"
measure pmem-big $R/big.bin {big}
evmdk_check pmem-teardown evmdk_guest_teardown c1 $R
evmdk_check_clean c1

B=/run/rootfs-blk
evmdk_check blk-mount mount_storages blk.json c2 $B
evmdk_expect_eq blk-no-dax "$(count_in '"dax": {{}}' /run/c2.json)" 1
measure blk-big $B/big.bin {big}
evmdk_check blk-teardown evmdk_guest_teardown c2 $B
evmdk_check_clean c2

E=/run/rootfs-error
evmdk_check_fails error-mount-fails mount_storages error.json c3 $E
cat /run/c3.err
evmdk_check error-names-storage grep -q "storage #0 'pmem-pci:0000:00:0c.0': DAX did not take effect" /run/c3.err
evmdk_check error-names-rule grep -q "X-erofs-vmdk.dax-fallback=error refuses the fallback" /run/c3.err
evmdk_check error-rolled-back grep -q "(rolled back)" /run/c3.err
evmdk_check_clean c3

W=/run/rootfs-warn
evmdk_check warn-mount mount_storages warn.json c4 $W
cat /run/c4.err
evmdk_check warn-on-stderr grep -q "erofs-vmdk: warning: storage #0 'pmem-pci:0000:00:0c.0': DAX did not take effect" /run/c4.err
evmdk_expect_eq warn-dax-fallback "$(count_in '": "fallback"' /run/c4.json)" 1
evmdk_expect_eq warn-in-result "$(count_in 'DAX did not take effect' /run/c4.json)" 1
evmdk_expect_eq warn-view "$(cat $W/etc/layer)" misaligned
evmdk_check warn-status-no-dax sh -c "erofs-vmdk guest status -i c4 -b $EVMDK_BASE | grep -q '\"dax\": false'"
evmdk_check warn-teardown evmdk_guest_teardown c4 $W
evmdk_check_clean c4
)SH",
                                                                       fmt::arg("big", big_sha)));
  job.files["blk.json"] = blk.dump(2);
  job.files["error.json"] = misaligned_storage("error").dump(2);
  job.files["warn.json"] = misaligned_storage("warn").dump(2);
  auto outcome = run_guest(env_, cfg, job);

  EVMDK_ASSERT_GUEST_PASSED(
      outcome,
      expected_checks(
          {"pmem-mount",          "pmem-dax-confirmed", "pmem-no-warnings",  "pmem-mountinfo-dax",
           "pmem-lowers-on-pmem", "pmem-status-dax",    "pmem-view",         "pmem-writable",
           "content-pmem-big",    "pmem-teardown",      "blk-mount",         "blk-no-dax",
           "content-blk-big",     "blk-teardown",       "error-mount-fails", "error-names-storage",
           "error-names-rule",    "error-rolled-back",  "warn-mount",        "warn-on-stderr",
           "warn-dax-fallback",   "warn-in-result",     "warn-view",         "warn-status-no-dax",
           "warn-teardown"},
          {"c1", "c2", "c3", "c4"}));

  auto value = [&](const std::string& name) {
    auto found = outcome.values.find("cached-kib-" + name);
    if (found == outcome.values.end()) throw HarnessError("no value cached-kib-" + name);
    return found->second;
  };
  RecordProperty("cached_kib_pmem_big", std::to_string(value("pmem-big")));
  RecordProperty("cached_kib_blk_big", std::to_string(value("blk-big")));
  const double big_kib = kBigFileBytes / 1024.0;
  EXPECT_LT(value("pmem-big"), 5 * 1024.0) << "DAX through guest mount's overlay";
  EXPECT_GT(value("blk-big"), 0.9 * big_kib) << "virtio-blk fills the page cache";
  EXPECT_LT(value("blk-big"), 1.2 * big_kib);
}

}  // namespace
}  // namespace evmdk::qemu
