// dm-verity end to end in a real 6.1 guest kernel (the host kernel here has no device-mapper):
// layers formatted on the host by `verity format`, options produced by the host's policy
// function, activated in the guest by the guest library (through `erofs-vmdk verity open`,
// which is VerityDevice::activate), mounted as EROFS and read.
//   intact layer        -> activates, mounts, the file reads back with the right checksum;
//   one data byte flipped -> activation and mount succeed, reading the file fails with EIO;
//   first block flipped / wrong root hash / options disagreeing with the superblock
//                       -> activation refused with a clear error, no device left behind;
//   at the end          -> no device-mapper device remains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "evmdk/guest/verity.h"
#include "evmdk/host/verity.h"
#include "test_support.h"

namespace evmdk {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>('a' + rng() % 26);
  return out;
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return host::to_hex(std::span<const uint8_t>(digest, size));
}

std::string kernel_version() {
  for (const auto& entry : fs::directory_iterator("/boot")) {
    std::string name = entry.path().filename().string();
    if (name.rfind("vmlinuz-", 0) == 0) return name.substr(8);
  }
  return {};
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::string bytes = test::read_file(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x40);
  test::write_file(path, bytes);
}

void copy_into(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

// Copies an executable and every shared library ldd lists, at the same paths.
void copy_with_libraries(const std::string& binary, const std::string& root, const std::string& as) {
  copy_into(binary, root + as);
  auto ldd = test::run({"ldd", binary});
  ASSERT_EQ(ldd.exit_code, 0) << ldd.err;
  std::istringstream lines(ldd.out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      if (word.rfind('/', 0) == 0 && fs::exists(word)) copy_into(fs::canonical(word), root + word);
    }
  }
}

const char* kInit = R"SH(#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /mnt /tmp
for m in loop dm-mod dm-bufio reed_solomon dm-verity crc32c_generic libcrc32c erofs; do
  insmod /modules/$m.ko || echo "EVMDK-RESULT insmod_failed=$m"
done
r() { echo "EVMDK-RESULT $1=$2"; }
opts() { sed 's/^/-o /' "$1" | tr '\n' ' '; }
open() {  # name device optionsfile
  erofs-vmdk verity open "$1" "$2" $(opts "$3") >/tmp/out 2>/tmp/err
  rc=$?
  r "open_$1" "$rc"
  r "open_$1_err" "$(tr '\n' ' ' </tmp/err)"
  return $rc
}
losetup -r /dev/loop0 /good.erofs
losetup -r /dev/loop1 /bad.erofs
losetup -r /dev/loop2 /bad0.erofs

if open good /dev/loop0 /good.opts; then
  r good_path "$(cat /tmp/out)"
  mount -t erofs -o ro /dev/mapper/good /mnt && r good_mount 0
  r good_sha "$(sha256sum /mnt/big | cut -d' ' -f1)"
  umount /mnt
  erofs-vmdk verity close good; r close_good $?
fi

if open bad /dev/loop1 /bad.opts; then
  mount -t erofs -o ro /dev/mapper/bad /mnt; r bad_mount $?
  cat /mnt/big >/dev/null 2>/tmp/err; r bad_read $?
  r bad_read_err "$(tr '\n' ' ' </tmp/err)"
  umount /mnt
  erofs-vmdk verity close bad; r close_bad $?
fi

erofs-vmdk verity check chk-good /dev/loop0 $(opts /good.opts) >/tmp/out 2>/tmp/err; r check_good $?
r check_good_out "$(tr '\n' ' ' </tmp/out)"
erofs-vmdk verity check chk-bad /dev/loop1 $(opts /bad.opts) >/tmp/out 2>/tmp/err; r check_bad $?
r check_bad_err "$(tr '\n' ' ' </tmp/err)"
open bad0 /dev/loop2 /bad0.opts
open wrongroot /dev/loop0 /wrongroot.opts
open wrongalg /dev/loop0 /wrongalg.opts
open nosb /dev/loop0 /nosb.opts
r dm_left "$(erofs-vmdk verity list | tr '\n' ',')"
r mapper_left "$(ls /dev/mapper | grep -v '^control$' | tr '\n' ',')"
r done 1
poweroff -f
)SH";

TEST(VerityQemu, GuestActivatesVerifiesAndRefuses) {
  EVMDK_REQUIRE_QEMU();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "ldd", "timeout");
  std::string version = kernel_version();
  std::string modules = "/lib/modules/" + version + "/kernel";
  ASSERT_TRUE(fs::exists(modules + "/drivers/md/dm-verity.ko")) << modules;

  test::TempDir dir;
  std::string root = dir / "initramfs";
  // A layer whose file spans many blocks, with a marker to find its data in the image.
  std::string big = "EVMDK-DATA-MARKER" + random_bytes(200000, 11);
  test::make_tree(dir / "src", {{"big", big}, {"etc/motd", "hello\n"}});
  test::make_erofs(dir / "src", dir / "good.erofs");
  const uint64_t data_size = fs::file_size(dir / "good.erofs");
  host::verity_format(dir / "good.erofs", {});
  auto options = host::verity_options_for_layer(dir / "good.erofs", host::VerityPolicy::kOn);

  std::string image = test::read_file(dir / "good.erofs");
  size_t marker = image.find("EVMDK-DATA-MARKER");
  ASSERT_NE(marker, std::string::npos);
  ASSERT_GE(marker, 4096u);  // not in block 0, which activation itself verifies
  fs::copy_file(dir / "good.erofs", dir / "bad.erofs");
  flip_byte(dir / "bad.erofs", marker + 100000);
  fs::copy_file(dir / "good.erofs", dir / "bad0.erofs");
  flip_byte(dir / "bad0.erofs", 1024 + 200);  // inside block 0 (superblock's reserved area)

  auto write_options = [&](const std::string& name, std::vector<std::string> opts) {
    std::string text;
    for (const auto& o : opts) text += o + "\n";
    test::write_file(root + "/" + name, text);
  };
  fs::create_directories(root);
  write_options("good.opts", options);
  write_options("bad.opts", options);
  write_options("bad0.opts", options);
  auto wrong_root = options;
  for (auto& o : wrong_root) {
    if (o.rfind("X-kata.dmverity.roothash=", 0) == 0) o.back() = o.back() == '0' ? '1' : '0';
  }
  write_options("wrongroot.opts", wrong_root);
  auto wrong_alg = options;
  for (auto& o : wrong_alg) {
    if (o.rfind("X-kata.dmverity.algorithm=", 0) == 0) o = "X-kata.dmverity.algorithm=sha512";
  }
  write_options("wrongalg.opts", wrong_alg);
  // Treating the superblock block as the first hash block cannot verify.
  auto no_sb = options;
  no_sb.push_back("X-kata.dmverity.no-superblock=true");
  write_options("nosb.opts", no_sb);

  for (const char* name : {"good.erofs", "bad.erofs", "bad0.erofs"}) copy_into(dir / name, root + "/" + name);
  copy_into("/bin/busybox", root + "/bin/busybox");
  copy_with_libraries(test::cli_path(), root, "/bin/erofs-vmdk");
  std::map<std::string, std::string> module_files = {
      {"loop", "drivers/block/loop.ko"}, {"dm-mod", "drivers/md/dm-mod.ko"},
      {"dm-bufio", "drivers/md/dm-bufio.ko"}, {"reed_solomon", "lib/reed_solomon/reed_solomon.ko"},
      {"dm-verity", "drivers/md/dm-verity.ko"}, {"crc32c_generic", "crypto/crc32c_generic.ko"}, {"libcrc32c", "lib/libcrc32c.ko"},
      {"erofs", "fs/erofs/erofs.ko"}};
  for (const auto& [name, path] : module_files) copy_into(modules + "/" + path, root + "/modules/" + name + ".ko");
  test::write_file(root + "/init", kInit);
  fs::permissions(root + "/init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
  auto cpio = test::sh("cd '" + root + "' && find . | cpio -o -H newc --quiet > '" + (dir / "initramfs.cpio") + "'");
  ASSERT_EQ(cpio.exit_code, 0) << cpio.err;

  auto qemu = test::run({"timeout", "--kill-after=10", "300", "qemu-system-x86_64", "-accel", "tcg",
                         "-m", "512", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
                         "-serial", "stdio", "-kernel", "/boot/vmlinuz-" + version, "-initrd",
                         dir / "initramfs.cpio", "-append",
                         "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"});
  std::map<std::string, std::string> results;
  std::istringstream lines(qemu.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto at = line.find("EVMDK-RESULT ");
    if (at == std::string::npos) continue;
    std::string kv = line.substr(at + 13);
    auto eq = kv.find('=');
    if (eq != std::string::npos) results[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  ASSERT_EQ(results["done"], "1") << "guest did not finish; console:\n" << qemu.out << qemu.err;
  SCOPED_TRACE("guest console:\n" + qemu.out);
  EXPECT_EQ(results.count("insmod_failed"), 0u);

  // Intact layer: activated, mounted, the file reads back bit for bit, then removed.
  EXPECT_EQ(results["open_good"], "0") << results["open_good_err"];
  EXPECT_EQ(results["good_path"], "/dev/mapper/good");
  EXPECT_EQ(results["good_mount"], "0");
  EXPECT_EQ(results["good_sha"], sha256_hex(big));
  EXPECT_EQ(results["close_good"], "0");

  // A flipped data byte: reading the file fails with an I/O error, never returns bad bytes.
  EXPECT_EQ(results["open_bad"], "0") << results["open_bad_err"];
  EXPECT_EQ(results["bad_mount"], "0");
  EXPECT_NE(results["bad_read"], "0");
  EXPECT_THAT(results["bad_read_err"], HasSubstr("Input/output error"));
  EXPECT_EQ(results["close_bad"], "0");

  // A full check (the RAII device removes itself on success and on failure) finds the block.
  EXPECT_EQ(results["check_good"], "0");
  EXPECT_THAT(results["check_good_out"], HasSubstr(fmt::format("/dev/loop0: {} bytes verified", data_size)));
  EXPECT_NE(results["check_bad"], "0");
  EXPECT_THAT(results["check_bad_err"],
              HasSubstr(fmt::format("data fails verification at byte {}", (marker + 100000) / 4096 * 4096)));

  // Refused at activation, naming the device and the reason.
  EXPECT_NE(results["open_bad0"], "0");
  EXPECT_THAT(results["open_bad0_err"], HasSubstr("does not verify the data"));
  EXPECT_THAT(results["open_bad0_err"], HasSubstr("/dev/loop2"));
  EXPECT_NE(results["open_wrongroot"], "0");
  EXPECT_THAT(results["open_wrongroot_err"], HasSubstr("does not verify the data"));
  EXPECT_NE(results["open_wrongalg"], "0");
  EXPECT_THAT(results["open_wrongalg_err"],
              HasSubstr("X-kata.dmverity.algorithm=sha512 disagrees with the superblock"));
  EXPECT_NE(results["open_nosb"], "0");

  // Nothing left behind.
  EXPECT_EQ(results["dm_left"], "");
  EXPECT_EQ(results["mapper_left"], "");
}

}  // namespace
}  // namespace evmdk
