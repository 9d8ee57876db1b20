// Issue 18's facts, proven with the lane's real kernel and QEMU: a composed GPT disk given to
// the guest as virtio-pmem (raw bytes of the VMDK, padded to 2 MiB, backup GPT at the new end)
// shows /dev/pmemNp1..pN; every partition mounts as EROFS with dax=always, and mountinfo says
// so; a 200 MiB file read through DAX leaves the guest's page cache (Cached) where it was,
// while the same file over virtio-blk fills it. And the ways DAX silently does not happen:
// which files DAX serves (not inlined tails, not compressed files, chunk-based ones only on
// newer kernels), a device that cannot do DAX at all (virtio-blk, a partition not 4 KiB
// aligned: the mount succeeds and mountinfo lacks dax=always), a device whose size is not a
// multiple of 2 MiB (no block device at all), and pmemN numbered in PCI probe order.
#include <fstream>
#include <span>

#include "evmdk/ondisk/endian.h"
#include "evmdk/ondisk/erofs.h"
#include "harness/pmem_disk.h"
#include "scenario.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kBigFileBytes = 200 * kMiB;
constexpr uint64_t kSmallFileBytes = 8 * kMiB;

// SHA-256 (hex) of a host file, by the same tool the guest uses (busybox sha256sum).
std::string sha256_file(const fs::path& path) {
  auto sum = test::run({"sha256sum", path.string()});
  if (sum.exit_code != 0 || sum.out.size() < 64)
    throw HarnessError("sha256sum " + path.string() + ": " + sum.err);
  return sum.out.substr(0, 64);
}

// Deterministic incompressible bytes, written in 1 MiB pieces; returns their SHA-256 (hex).
std::string write_noise(const fs::path& path, uint64_t size, uint32_t seed) {
  write_noise_file(path, size, seed);
  return sha256_file(path);
}

// EROFS data layout of one file as dump.erofs reports it (0 flat plain, 2 flat inline,
// 3 compressed compact, 4 chunk-based): the test states which layout each file really has
// before it reads anything into what the guest does with it.
int erofs_layout(const std::string& image, const std::string& path_in_image,
                 const std::string& device = {}) {
  std::vector<std::string> argv{"dump.erofs", "--path=" + path_in_image};
  if (!device.empty()) argv.push_back("--device=" + device);
  argv.push_back(image);
  auto dump = test::run(argv);
  auto at = dump.out.find("Layout: ");
  if (dump.exit_code != 0 || at == std::string::npos) {
    throw HarnessError("dump.erofs --path=" + path_in_image + " " + image + ": " + dump.out +
                       dump.err);
  }
  return std::stoi(dump.out.substr(at + 8));
}

// A real two-device EROFS image: mkfs.erofs --chunksize=4096 --blobdev=BLOB writes the fsmeta
// (chunk indexes on device 1) and the blob, but erofs-utils 1.5 leaves the device slot's block
// count and mapped_blkaddr at 0; they are filled in as erofs-utils 1.7+ writes them (the blob
// right after the fsmeta), so compose --mode flat and 6.12's flat-device mode can place it.
struct OneBlobFlatImage {
  std::string fsmeta, blob;
};

OneBlobFlatImage make_one_blob_flat_image(const std::string& tree, const std::string& work) {
  using namespace evmdk::ondisk;
  using namespace evmdk::ondisk::erofs;
  OneBlobFlatImage image{work + "/flat-fsmeta.erofs", work + "/flat-blob.img"};
  test::make_erofs(tree, image.fsmeta, {},
                   {"--chunksize=4096", "-Enoinline_data", "--blobdev=" + image.blob});
  std::string meta = test::read_file(image.fsmeta);
  std::span<char> bytes(meta.data(), meta.size());
  const size_t sb_at = kSuperblockOffset;
  const uint64_t block = 4096;
  if (load_le32(bytes, sb_at + sb::kMagic) != kMagic || meta[sb_at + sb::kBlkszBits] != 12 ||
      load_le16(bytes, sb_at + sb::kExtraDevices) != 1 || meta.size() % block != 0) {
    throw HarnessError("flat image: mkfs.erofs wrote no 4 KiB-block image with one device slot");
  }
  const size_t slot_at = load_le16(bytes, sb_at + sb::kDevtSlotOff) * kDeviceSlotSize;
  const uint64_t blob_size = fs::file_size(image.blob);
  if (blob_size % block != 0) throw HarnessError("flat image: blob is not whole blocks");
  const std::string tag = "evmdk-pmem-flat-blob";
  if (slot_at + kDeviceSlotSize > meta.size()) throw HarnessError("flat image: slot past the end");
  std::copy(tag.begin(), tag.end(), meta.begin() + static_cast<long>(slot_at + slot::kTag));
  store_le<uint32_t>(bytes, slot_at + slot::kBlocks, static_cast<uint32_t>(blob_size / block));
  store_le<uint32_t>(bytes, slot_at + slot::kMappedBlkaddr,
                     static_cast<uint32_t>(meta.size() / block));
  // 4 KiB blocks: the checksum covers [1024, 4096).
  store_le<uint32_t>(bytes, sb_at + sb::kChecksum,
                     erofs_superblock_crc(byte_view(meta).subspan(sb_at, block - sb_at)));
  test::write_file(image.fsmeta, meta);
  auto fsck = test::run({"fsck.erofs", "--device=" + image.blob, image.fsmeta});
  if (fsck.exit_code != 0) {
    throw HarnessError("flat image: fsck.erofs rejected it: " + fsck.out + fsck.err);
  }
  return image;
}

class PmemDax : public QemuTest {
 protected:
  void SetUp() override {
    QemuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    EVMDK_REQUIRE_TOOLS("qemu-img", "sgdisk", "dump.erofs", "sha256sum");
  }
};

// One file per kind of data layout, named for what the guest must see.
struct FileFacts {
  std::string name;        // value/check suffix
  std::string guest_path;  // below /mnt
  std::string sha256;
  bool dax_served;  // read through DAX (no page cache) on this kernel
};

// The guest side: finding pmem devices by PCI slot, the super options of a mount, and the growth
// of Cached around reading a file (hashing it, so the content is checked by the same read).
constexpr std::string_view kPmemShell = R"SH(
# The pmem block device (pmemN) whose virtio-pmem PCI function is in slot $1 ("10.0").
pmem_at() {
  for b in /sys/block/pmem*; do
    [ -e "$b" ] || continue
    case "$(readlink -f "$b")" in */0000:00:$1/*) echo "${b##*/}"; return 0 ;; esac
  done
  return 1
}
wait_pmem_at() {
  tries=300
  until pmem_at "$1"; do
    [ "$tries" -gt 0 ] || { echo "no pmem device in PCI slot $1" >&2; return 1; }
    usleep 100000; tries=$((tries - 1))
  done
}
# The super options (after the "-" separator: fstype, source, super options) of mount point $1.
super_options() {
  awk -v m="$1" '$5 == m { for (i = 7; $i != "-"; i++) ; print $(i + 3) }' /proc/self/mountinfo
}
has_dax() {
  opts=$(super_options "$1"); echo "$1: $opts"
  case ",$opts," in *,dax=always,*) return 0 ;; esac
  return 1
}
lacks_dax() { ! has_dax "$1"; }
cached_kib() { sed -n 's/^Cached: *\([0-9]*\) kB$/\1/p' /proc/meminfo; }
# measure NAME FILE SHA256: Cached growth (KiB) while FILE is read once, and its content.
measure() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(cached_kib); started=$(evmdk_uptime)
  sum=$(sha256sum "$2" | cut -d' ' -f1)
  after=$(cached_kib); ended=$(evmdk_uptime)
  evmdk_value "cached-kib-$1" $((after - before))
  evmdk_value "read-seconds-$1" "$(echo "$started $ended" | awk '{ printf "%.2f", $2 - $1 }')"
  evmdk_expect_eq "content-$1" "$sum" "$3"
}
wait_dmesg() {  # PATTERN: up to 10 s for the kernel to log it
  tries=100
  until dmesg | grep -q -- "$1"; do
    [ "$tries" -gt 0 ] || { echo "dmesg never showed '$1'"; return 1; }
    usleep 100000; tries=$((tries - 1))
  done
  dmesg | grep -- "$1" | head -n 3
}
)SH";

// Four pmem devices, on the command line in this order: the main disk (PCI slot 0x10), a disk
// whose only partition starts at sector 2049 (slot 0x0c), a padded disk whose backup GPT was
// left short of the end (0x0d) and a 3 MiB device (0x0e); so pmemN numbering (PCI probe order)
// and command-line order disagree. The main disk is also attached over virtio-blk.
TEST_F(PmemDax, GptDiskMountsWithDaxAndBypassesThePageCache) {
  const std::string work = temp_.path();

  // Layers, top first: p1 plain (-Enoinline_data), p2 mkfs.erofs defaults (inlined tails),
  // p3 lz4 (-Enoinline_data), p4 chunk-based (--chunksize=4096 -Enoinline_data).
  std::vector<FileFacts> files;
  std::string big_sha = write_noise(work + "/trees/plain/big.bin", kBigFileBytes, 1);
  test::make_tree(work + "/trees/plain", {{"etc/layer", "plain\n"}});
  std::string no_tail_sha = write_noise(work + "/trees/inline/no-tail.bin", kSmallFileBytes, 2);
  std::string with_tail_sha =
      write_noise(work + "/trees/inline/with-tail.bin", kSmallFileBytes + 1000, 3);
  std::string text;
  for (int i = 0; text.size() < kSmallFileBytes; ++i)
    text += fmt::format("line {} of a text that compresses well\n", i % 97);
  text.resize(kSmallFileBytes);
  test::make_tree(work + "/trees/compressed", {{"text.txt", text}});
  std::string stored_sha = write_noise(work + "/trees/compressed/noise.bin", kSmallFileBytes, 4);
  std::string chunked_sha = write_noise(work + "/trees/chunked/chunked.bin", kSmallFileBytes, 5);
  std::vector<std::string> layers;
  for (const auto& [name, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"plain", {"-Enoinline_data"}},
           {"inline", {}},
           {"compressed", {"-zlz4", "-Enoinline_data"}},
           {"chunked", {"--chunksize=4096", "-Enoinline_data"}}}) {
    layers.push_back(work + "/" + name + ".erofs");
    test::make_erofs(work + "/trees/" + name, layers.back(), {}, args);
  }
  ASSERT_EQ(erofs_layout(layers[0], "/big.bin"), 0);
  ASSERT_EQ(erofs_layout(layers[1], "/no-tail.bin"), 0)
      << "a file without a tail has none to inline";
  ASSERT_EQ(erofs_layout(layers[1], "/with-tail.bin"), 2);
  ASSERT_EQ(erofs_layout(layers[2], "/text.txt"), 3);
  ASSERT_EQ(erofs_layout(layers[2], "/noise.bin"), 0)
      << "mkfs.erofs stores incompressible data plain";
  ASSERT_EQ(erofs_layout(layers[3], "/chunked.bin"), 4);
  files = {
      {"dax-big", "p1/big.bin", big_sha, true},
      {"dax-no-tail", "p2/no-tail.bin", no_tail_sha, true},
      {"dax-with-tail", "p2/with-tail.bin", with_tail_sha, false},
      {"dax-compressed", "p3/text.txt", sha256_file(work + "/trees/compressed/text.txt"), false},
      {"dax-stored-plain", "p3/noise.bin", stored_sha, true},
      // Upstream EROFS gave chunk-based files DAX after 6.1.0; Debian's 6.1.0-57 has the
      // change, as 6.12 has: measured, both read them through DAX.
      {"dax-chunked", "p4/chunked.bin", chunked_sha, true}};

  // The composed disk, as the existing CLI makes it, then raw + padded + backup GPT at the end.
  auto compose = test::cli({"compose", "--mode", "gpt", "-q", "-o", work + "/disk", layers[0],
                            layers[1], layers[2], layers[3]});
  ASSERT_EQ(compose.exit_code, 0) << compose.out << compose.err;
  auto disk = make_pmem_raw_disk(work + "/disk/disk.vmdk", work + "/disk.img", work);
  ASSERT_EQ(disk.size % (2 * kMiB), 0u);
  ASSERT_GT(disk.size, disk.unpadded_size)
      << "this layout is not 2 MiB-aligned by itself; padding is what is tested";

  // One partition at sector 2049: 512-byte aligned, not 4 KiB aligned.
  std::string misaligned_sha =
      write_noise(work + "/trees/misaligned/eight.bin", kSmallFileBytes, 6);
  test::make_erofs(work + "/trees/misaligned", work + "/misaligned.erofs", {}, {"-Enoinline_data"});
  const uint64_t layer_bytes = fs::file_size(work + "/misaligned.erofs");
  const uint64_t start_sector = 2049;
  const std::string misaligned_img = work + "/misaligned.img";
  { std::ofstream create(misaligned_img, std::ios::binary | std::ios::trunc); }
  fs::resize_file(misaligned_img,
                  round_up_to_pmem_alignment(start_sector * 512 + layer_bytes + kMiB));
  auto part = test::run({"sgdisk", "-a", "1", "-n",
                         fmt::format("1:{}:{}", start_sector, start_sector + layer_bytes / 512 - 1),
                         misaligned_img});
  ASSERT_EQ(part.exit_code, 0) << part.out << part.err;
  {
    std::fstream out(misaligned_img, std::ios::binary | std::ios::in | std::ios::out);
    std::ifstream in(work + "/misaligned.erofs", std::ios::binary);
    out.seekp(static_cast<std::streamoff>(start_sector * 512));
    out << in.rdbuf();
    ASSERT_TRUE(out.flush());
  }
  // Padded to 2 MiB but the backup GPT left where it was (no sgdisk -e): the kernel still
  // takes the primary table, and says the backup is not at the end.
  auto small = test::cli(
      {"compose", "--mode", "gpt", "-q", "-o", work + "/small", work + "/misaligned.erofs"});
  ASSERT_EQ(small.exit_code, 0) << small.out << small.err;
  const std::string short_backup_img = work + "/short-backup.img";
  auto convert = test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                            work + "/small/disk.vmdk", short_backup_img});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  ASSERT_NE(fs::file_size(short_backup_img) % (2 * kMiB), 0u);
  fs::resize_file(short_backup_img, round_up_to_pmem_alignment(fs::file_size(short_backup_img)));
  auto verify = test::run({"sgdisk", "-v", short_backup_img});
  EXPECT_NE(verify.out.find("doesn't reside"), std::string::npos) << verify.out;

  // 3 MiB: QEMU takes it (a multiple of 4 KiB), the guest's nd_pmem cannot map it.
  const std::string odd_img = work + "/odd-size.img";
  { std::ofstream create(odd_img, std::ios::binary | std::ios::trunc); }
  fs::resize_file(odd_img, 3 * kMiB);

  make_ext4_disk(path("upper.img"), 32, temp_.path());
  GuestConfig cfg = config("pmem-dax");
  cfg.memory_mib = 768;  // room for the 200 MiB the virtio-blk read puts in the page cache
  cfg.timeout = std::chrono::seconds(600);
  cfg.extra_modules = pmem_module_names();
  // Placed in guest memory in this order: the odd size last, so it shifts nobody.
  cfg.pmem_devices = {{disk.image, 0, "0x10"},
                      {misaligned_img, 0, "0x0c"},
                      {short_backup_img, 0, "0x0d"},
                      {odd_img, 0, "0x0e"}};
  cfg.drives = {{disk.image, "raw", true, "evmdk-pmem-blk"}, upper_drive(path("upper.img"))};

  std::string script = std::string(kPmemShell) + "evmdk_expect_eq guest-kernel \"$(uname -r)\" '" +
                       env_.kernel_version + "'\n" + R"SH(
main=$(wait_pmem_at 10.0) && evmdk_result pmem-main-found PASS "$main: $(readlink -f /sys/block/$main)"
four_partitions() {
  for i in 1 2 3 4; do evmdk_wait_path /dev/${main}p$i 10 || return 1; done
  ! test -e /dev/${main}p5
}
evmdk_check pmem-partitions four_partitions
low=$(wait_pmem_at 0c.0)
evmdk_expect_eq lowest-pci-slot-is-pmem0 "$low" pmem0
evmdk_check first-on-command-line-is-not-pmem0 test "$main" != pmem0
short=$(wait_pmem_at 0d.0)
evmdk_check short-backup-partition-found evmdk_wait_path /dev/${short}p1 10
evmdk_check short-backup-warned wait_dmesg 'Alt. header is not at the end'
evmdk_check odd-size-refused wait_dmesg misaligned
evmdk_check odd-size-no-block-device sh -c '! ls -l /sys/block | grep -q 0000:00:0e.0'
for i in 1 2 3 4; do
  mkdir -p /mnt/p$i
  evmdk_check dax-mount-p$i mount -t erofs -o ro,dax=always /dev/${main}p$i /mnt/p$i
  evmdk_check dax-mountinfo-p$i has_dax /mnt/p$i
done
)SH";
  for (const auto& f : files) {
    script += fmt::format("measure {} /mnt/{} {}\n", f.name, f.guest_path, f.sha256);
  }
  script += fmt::format(R"SH(
# overlayfs over DAX lowers: reads go to the lower file's own read path
upper=$(evmdk_wait_serial {upper})
mkdir -p /mnt/upper /mnt/root
mount -t ext4 /dev/${{upper##*/}} /mnt/upper && mkdir -p /mnt/upper/upper /mnt/upper/work
evmdk_check overlay-mounted mount -t overlay overlay -o lowerdir=/mnt/p1:/mnt/p2:/mnt/p3:/mnt/p4,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work /mnt/root
measure overlay-big /mnt/root/big.bin {big}
umount /mnt/root; umount /mnt/upper

# the same disk over virtio-blk: the page cache holds what was read
blk=$(evmdk_wait_serial evmdk-pmem-blk) && blk=${{blk##*/}}
evmdk_wait_path /dev/${{blk}}2 10 >/dev/null
mkdir -p /mnt/b1 /mnt/b2
evmdk_check blk-mount mount -t erofs -o ro /dev/${{blk}}1 /mnt/b1
measure blk-big /mnt/b1/big.bin {big}
# silent fallback 1: dax=always on a device without DAX
evmdk_check blk-dax-mount-succeeds mount -t erofs -o ro,dax=always /dev/${{blk}}2 /mnt/b2
evmdk_check blk-dax-not-in-mountinfo lacks_dax /mnt/b2
evmdk_check blk-dax-fallback-logged wait_dmesg 'DAX unsupported by block device'
# silent fallback 2: a pmem partition that does not start on a 4 KiB boundary
mkdir -p /mnt/m1
evmdk_check misaligned-part-mount-succeeds mount -t erofs -o ro,dax=always /dev/${{low}}p1 /mnt/m1
evmdk_check misaligned-part-not-in-mountinfo lacks_dax /mnt/m1
measure misaligned-part /mnt/m1/eight.bin {misaligned}
echo "--- kernel log (pmem, dax, erofs)"; dmesg | grep -iE 'pmem|nd_|dax|erofs|GPT' 
for m in /mnt/m1 /mnt/b2 /mnt/b1 /mnt/p4 /mnt/p3 /mnt/p2 /mnt/p1; do umount $m; done
evmdk_check nothing-left evmdk_leftover_mounts
)SH",
                        fmt::arg("upper", kUpperSerial), fmt::arg("big", big_sha),
                        fmt::arg("misaligned", misaligned_sha));

  GuestJob job;
  job.scenario = script;
  auto outcome = run_guest(env_, cfg, job);

  std::vector<std::string> expected{"guest-kernel",
                                    "pmem-main-found",
                                    "pmem-partitions",
                                    "lowest-pci-slot-is-pmem0",
                                    "first-on-command-line-is-not-pmem0",
                                    "short-backup-partition-found",
                                    "short-backup-warned",
                                    "odd-size-refused",
                                    "odd-size-no-block-device",
                                    "overlay-mounted",
                                    "content-overlay-big",
                                    "blk-mount",
                                    "content-blk-big",
                                    "blk-dax-mount-succeeds",
                                    "blk-dax-not-in-mountinfo",
                                    "blk-dax-fallback-logged",
                                    "misaligned-part-mount-succeeds",
                                    "misaligned-part-not-in-mountinfo",
                                    "content-misaligned-part",
                                    "nothing-left"};
  for (int i = 1; i <= 4; ++i) {
    expected.push_back(fmt::format("dax-mount-p{}", i));
    expected.push_back(fmt::format("dax-mountinfo-p{}", i));
  }
  for (const auto& f : files) expected.push_back("content-" + f.name);
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected);

  // Cached growth, KiB. Through DAX: less than 5 MiB for 200 MiB; over virtio-blk: about the
  // file (the kernel may keep a little less, never much more); the ratio at least 40x.
  auto value = [&](const std::string& name) {
    auto found = outcome.values.find("cached-kib-" + name);
    if (found == outcome.values.end()) throw HarnessError("no value cached-kib-" + name);
    return found->second;
  };
  const double big_kib = kBigFileBytes / 1024.0, small_kib = kSmallFileBytes / 1024.0;
  std::string figures;
  for (const auto& [name, number] : outcome.values)
    figures += fmt::format("  {} = {}\n", name, number);
  SCOPED_TRACE("guest figures (KiB, seconds):\n" + figures);
  RecordProperty("cached_kib_dax_big", std::to_string(value("dax-big")));
  RecordProperty("cached_kib_blk_big", std::to_string(value("blk-big")));
  EXPECT_LT(value("dax-big"), 5 * 1024.0);
  EXPECT_LT(value("overlay-big"), 5 * 1024.0);
  EXPECT_GT(value("blk-big"), 0.9 * big_kib);
  EXPECT_LT(value("blk-big"), 1.2 * big_kib);
  EXPECT_GT(value("blk-big"), 40 * std::max(value("dax-big"), 256.0));
  for (const auto& f : files) {
    if (f.name == "dax-big") continue;
    if (f.dax_served) {
      EXPECT_LT(value(f.name), 0.125 * small_kib) << f.name << " should be read through DAX";
    } else {
      EXPECT_GT(value(f.name), 0.9 * small_kib) << f.name << " should go through the page cache";
    }
  }
  EXPECT_GT(value("misaligned-part"), 0.9 * small_kib) << "a misaligned partition cannot do DAX";
}

// The maxmem arithmetic of pmem_attach_args against the lane's QEMU, without booting: RAM +
// the sum of the device sizes starts (paused with -S, still running after 10 s), one
// MiB less is refused with QEMU's own message. slots= gives no extra room.
TEST_F(PmemDax, QemuNeedsMaxmemOfRamPlusTheDeviceSizes) {
  const std::string work = temp_.path();
  std::vector<PmemDevice> devices{{work + "/a.img", 0, ""}, {work + "/b.img", 0, ""}};
  test::write_file(work + "/a.img", std::string(8 * kMiB, '\0'));
  test::write_file(work + "/b.img", std::string(6 * kMiB, '\0'));
  auto attach = pmem_attach_args(512, devices);
  ASSERT_EQ(attach.memory, "512M,slots=2,maxmem=526M");
  auto start = [&](const std::string& memory) {
    std::vector<std::string> argv{env_.qemu.string(),
                                  "-nodefaults",
                                  "-no-user-config",
                                  "-display",
                                  "none",
                                  "-S",
                                  "-accel",
                                  "tcg",
                                  "-m",
                                  memory};
    for (const auto& dir : env_.qemu_datadirs) argv.insert(argv.end(), {"-L", dir.string()});
    argv.insert(argv.end(), attach.args.begin(), attach.args.end());
    return run_command(argv, work, std::chrono::seconds(10));
  };
  auto exact = start(attach.memory);
  EXPECT_NE(exact.output.find("[killed after 10 s]"), std::string::npos)
      << "QEMU did not keep running with " << attach.memory << ": " << exact.output;
  auto short_by_one = start("512M,slots=2,maxmem=525M");
  EXPECT_NE(short_by_one.status, 0);
  EXPECT_NE(short_by_one.output.find("not enough space"), std::string::npos) << short_by_one.output;
}

// dm-verity cannot sit under DAX: the same partition mounts with DAX straight from pmem, but
// through a dm-verity device (opened as the guest driver opens it, from compose's storage
// options) EROFS falls back silently: the mount succeeds, mountinfo lacks dax=always, and the
// data goes through the page cache.
TEST_F(PmemDax, DmVerityOverPmemFallsBackToThePageCache) {
  const std::string work = temp_.path();
  std::string sha = write_noise(work + "/verity-tree/eight.bin", kSmallFileBytes, 8);
  test::make_erofs(work + "/verity-tree", work + "/verity.erofs", {}, {"-Enoinline_data"});
  auto format = test::cli({"verity", "format", "-q", work + "/verity.erofs"});
  ASSERT_EQ(format.exit_code, 0) << format.out << format.err;
  auto compose = test::cli({"compose", "--mode", "gpt", "--verity", "on", "-q", "-o",
                            work + "/disk", work + "/verity.erofs"});
  ASSERT_EQ(compose.exit_code, 0) << compose.out << compose.err;
  auto disk = make_pmem_raw_disk(work + "/disk/disk.vmdk", work + "/disk.img", work);
  std::string verity_options;
  const auto composed = read_composed_disk(work + "/disk");
  for (const auto& option : composed.storages.at(0).at("options")) {
    std::string text = option.get<std::string>();
    if (text.rfind("X-kata.dmverity.", 0) == 0) verity_options += " -o " + text;
  }
  ASSERT_NE(verity_options.find("roothash="), std::string::npos) << verity_options;

  GuestConfig cfg = config("pmem-verity");
  cfg.timeout = std::chrono::seconds(300);
  cfg.extra_modules = pmem_module_names();
  cfg.pmem_devices = {{disk.image, 0, ""}};
  GuestJob job;
  job.scenario = std::string(kPmemShell) + R"SH(
part=$(evmdk_wait_path /dev/pmem0p1 30) && evmdk_result pmem-found PASS "$part"
mkdir -p /mnt/direct /mnt/verity
evmdk_check direct-mount mount -t erofs -o ro,dax=always $part /mnt/direct
evmdk_check direct-mountinfo has_dax /mnt/direct
)SH" + "measure direct /mnt/direct/eight.bin " +
                 sha + R"SH(
umount /mnt/direct
evmdk_check verity-open erofs-vmdk verity open -q evmdk-pmem-verity $part)SH" +
                 verity_options + R"SH(
evmdk_check verity-mount mount -t erofs -o ro,dax=always /dev/mapper/evmdk-pmem-verity /mnt/verity
evmdk_check verity-not-in-mountinfo lacks_dax /mnt/verity
evmdk_check verity-fallback-logged wait_dmesg 'DAX unsupported by block device'
)SH" + "measure verity /mnt/verity/eight.bin " +
                 sha + R"SH(
umount /mnt/verity
evmdk_check verity-close erofs-vmdk verity close evmdk-pmem-verity
evmdk_check nothing-left evmdk_leftover_mounts
evmdk_check no-dm evmdk_leftover_dm
)SH";
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_ASSERT_GUEST_PASSED(
      outcome, {"pmem-found", "direct-mount", "direct-mountinfo", "content-direct", "verity-open",
                "verity-mount", "verity-not-in-mountinfo", "verity-fallback-logged",
                "content-verity", "verity-close", "nothing-left", "no-dm"});
  EXPECT_LT(outcome.values.at("cached-kib-direct"), 1024.0);
  EXPECT_GT(outcome.values.at("cached-kib-verity"), 0.9 * kSmallFileBytes / 1024.0);
}

// containerd's tar-index layers (enable_tar_index: 512-byte EROFS blocks, the tar in the same
// file) cannot be read through DAX: DAX needs the EROFS block to be the page size. 6.12 mounts
// the layer from pmem (flat-device mode finds the in-file device) and drops dax=always; 6.1
// has no flat-device mode and refuses the in-file device (empty tag) without device=.
TEST_F(PmemDax, TarIndexLayerCannotUseDax) {
  const std::string work = temp_.path();
  const std::string layer =
      test::source_dir() + "/tests/data/fixtures/containerd-2.2.4/tarindex/snapshots/1/layer.erofs";
  const std::string image = work + "/tarindex.img";
  fs::copy_file(layer, image);
  fs::resize_file(image, round_up_to_pmem_alignment(fs::file_size(image)));
  const bool flat_device_mode = kernel_has_native_mount_paths(env_);
  GuestConfig cfg = config("pmem-tarindex");
  cfg.timeout = std::chrono::seconds(300);
  cfg.extra_modules = pmem_module_names();
  cfg.pmem_devices = {{image, 0, ""}};
  GuestJob job;
  job.scenario = std::string(kPmemShell) + R"SH(
dev=$(evmdk_wait_path /dev/pmem0 30) && evmdk_result pmem-found PASS "$dev"
mkdir -p /mnt/t
)SH" +
                 (flat_device_mode ? R"SH(
evmdk_check mount mount -t erofs -o ro,dax=always /dev/pmem0 /mnt/t
evmdk_check not-in-mountinfo lacks_dax /mnt/t
evmdk_check fallback-logged wait_dmesg 'unsupported blocksize for DAX'
evmdk_check readable sh -c 'find /mnt/t -type f | head -n 20 | xargs cat > /dev/null'
umount /mnt/t
)SH"
                                   : R"SH(
evmdk_check_fails refused mount -t erofs -o ro,dax=always /dev/pmem0 /mnt/t
evmdk_check refusal-logged wait_dmesg 'empty device tag'
)SH");
  auto outcome = run_guest(env_, cfg, job);
  if (flat_device_mode) {
    EVMDK_EXPECT_GUEST_PASSED(
        outcome, {"pmem-found", "mount", "not-in-mountinfo", "fallback-logged", "readable"});
  } else {
    EVMDK_EXPECT_GUEST_PASSED(outcome, {"pmem-found", "refused", "refusal-logged"});
  }
}

// A flat (fsmeta) disk: compose --mode flat puts the fsmeta and its blob on one disk, and the
// guest mounts that one pmem device in flat-device mode, with DAX, where the kernel has the
// mode (6.12); 6.1 refuses it without device=. The device= form (one pmem device per image)
// takes DAX on both.
TEST_F(PmemDax, FlatDiskTakesDaxInFlatDeviceModeOnlyWhereTheKernelHasIt) {
  EVMDK_REQUIRE_TOOLS("fsck.erofs");
  const std::string work = temp_.path();
  const bool flat_device_mode = kernel_has_native_mount_paths(env_);
  std::string big_sha = write_noise(work + "/flat-tree/blob-data.bin", 16 * kMiB, 7);
  test::make_tree(work + "/flat-tree", {{"hostname", "pmem-flat\n"}});
  auto image = make_one_blob_flat_image(work + "/flat-tree", work);
  ASSERT_EQ(erofs_layout(image.fsmeta, "/blob-data.bin", image.blob), 4);

  auto compose = test::cli(
      {"compose", "--mode", "flat", "-q", "-o", work + "/disk", image.fsmeta, image.blob});
  ASSERT_EQ(compose.exit_code, 0) << compose.out << compose.err;
  // No GPT on a flat disk: raw bytes, padded; nothing to fix at the end.
  const std::string flat_img = work + "/flat.img";
  auto convert = test::run(
      {"qemu-img", "convert", "-f", "vmdk", "-O", "raw", work + "/disk/disk.vmdk", flat_img});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  fs::resize_file(flat_img, round_up_to_pmem_alignment(fs::file_size(flat_img)));
  // The device= form: each image its own device (copies: QEMU maps whole files).
  for (const auto& [from, to] :
       {std::pair{image.fsmeta, work + "/meta.img"}, std::pair{image.blob, work + "/blob.img"}}) {
    fs::copy_file(from, to);
    fs::resize_file(to, round_up_to_pmem_alignment(fs::file_size(to)));
  }

  GuestConfig cfg = config("pmem-flat");
  cfg.timeout = std::chrono::seconds(300);
  cfg.extra_modules = pmem_module_names();
  cfg.pmem_devices = {
      {flat_img, 0, "0x0a"}, {work + "/meta.img", 0, "0x0b"}, {work + "/blob.img", 0, "0x0c"}};
  std::string flat_part =
      flat_device_mode
          ? "evmdk_check flat-mount mount -t erofs -o ro,dax=always /dev/$flat /mnt/flat\n"
            "evmdk_check flat-mountinfo has_dax /mnt/flat\n"
            "measure flat-disk /mnt/flat/blob-data.bin " +
                big_sha +
                "\n"
                "umount /mnt/flat\n"
          : "evmdk_check_fails flat-refused mount -t erofs -o ro,dax=always /dev/$flat /mnt/flat\n";
  std::string script = std::string(kPmemShell) + R"SH(
flat=$(wait_pmem_at 0a.0); meta=$(wait_pmem_at 0b.0); blob=$(wait_pmem_at 0c.0)
evmdk_result pmem-found PASS "flat=$flat meta=$meta blob=$blob"
mkdir -p /mnt/flat /mnt/devices
)SH" + flat_part + R"SH(
evmdk_check devices-mount mount -t erofs -o ro,dax=always,device=/dev/$blob /dev/$meta /mnt/devices
evmdk_check devices-mountinfo has_dax /mnt/devices
)SH" + "measure devices /mnt/devices/blob-data.bin " +
                       big_sha + R"SH(
umount /mnt/devices
evmdk_check nothing-left evmdk_leftover_mounts
)SH";
  GuestJob job;
  job.scenario = script;
  auto outcome = run_guest(env_, cfg, job);
  std::vector<std::string> expected{"pmem-found", "devices-mount", "devices-mountinfo",
                                    "content-devices", "nothing-left"};
  if (flat_device_mode) {
    expected.insert(expected.end(), {"flat-mount", "flat-mountinfo", "content-flat-disk"});
  } else {
    expected.push_back("flat-refused");
  }
  EVMDK_ASSERT_GUEST_PASSED(outcome, expected);
  EXPECT_LT(outcome.values.at("cached-kib-devices"), 1024.0) << "chunk-based blob data through DAX";
  if (flat_device_mode) {
    EXPECT_LT(outcome.values.at("cached-kib-flat-disk"), 1024.0);
  }
}

}  // namespace
}  // namespace evmdk::qemu
