// dm-verity end to end in a real 6.1 guest kernel (the host kernel here has no device-mapper):
// layers formatted on the host by `verity format`, options produced by the host's policy
// function, each layer attached as its own virtio disk, activated in the guest by the guest
// library (through `erofs-vmdk verity open`, which is VerityDevice::activate), mounted as EROFS
// and read.
//   intact layer        -> activates, mounts, the file reads back with the right checksum;
//   one data byte flipped -> activation and mount succeed, reading the file fails with EIO;
//   first block flipped / wrong root hash / options disagreeing with the superblock
//                       -> activation refused with a clear error, no device left behind;
//   at the end          -> no device-mapper device remains.
#include <gmock/gmock.h>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <filesystem>
#include <random>

#include "../qemu/scenario.h"
#include "evmdk/host/verity/verity.h"

namespace evmdk::qemu {
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

void flip_byte(const std::string& path, uint64_t offset) {
  std::string bytes = test::read_file(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x40);
  test::write_file(path, bytes);
}

std::string option_lines(const std::vector<std::string>& options) {
  std::string text;
  for (const auto& o : options) text += o + "\n";
  return text;
}

// The options of every case: the layer's own, and three that must not verify it.
std::map<std::string, std::string> option_files(const std::vector<std::string>& options) {
  auto wrong_root = options;
  for (auto& o : wrong_root) {
    if (o.rfind("X-kata.dmverity.roothash=", 0) == 0) o.back() = o.back() == '0' ? '1' : '0';
  }
  auto wrong_alg = options;
  for (auto& o : wrong_alg) {
    if (o.rfind("X-kata.dmverity.algorithm=", 0) == 0) o = "X-kata.dmverity.algorithm=sha512";
  }
  // Treating the superblock block as the first hash block cannot verify.
  auto no_sb = options;
  no_sb.push_back("X-kata.dmverity.no-superblock=true");
  return {{"layer.opts", option_lines(options)},
          {"wrongroot.opts", option_lines(wrong_root)},
          {"wrongalg.opts", option_lines(wrong_alg)},
          {"nosb.opts", option_lines(no_sb)}};
}

constexpr std::string_view kScript = R"SH(
good=$(evmdk_wait_serial evmdk-verity-good) && evmdk_result good-disk PASS "$good"
bad=$(evmdk_wait_serial evmdk-verity-bad) && evmdk_result bad-disk PASS "$bad"
bad0=$(evmdk_wait_serial evmdk-verity-bad0) && evmdk_result bad0-disk PASS "$bad0"
opts() { sed 's/^/-o /' "/job/$1" | tr '\n' ' '; }
mkdir -p /mnt/v

evmdk_check good-open erofs-vmdk verity open good "$good" $(opts layer.opts)
evmdk_check good-mount mount -t erofs -o ro /dev/mapper/good /mnt/v
evmdk_expect_eq good-reads-back "$(sha256sum /mnt/v/big | cut -d' ' -f1)" "$(cat /job/big.sha256)"
evmdk_check good-umount umount /mnt/v
evmdk_check good-close erofs-vmdk verity close good

evmdk_check bad-open erofs-vmdk verity open bad "$bad" $(opts layer.opts)
evmdk_check bad-mount mount -t erofs -o ro /dev/mapper/bad /mnt/v
evmdk_check_fails bad-read-fails sh -c 'cat /mnt/v/big > /dev/null'
evmdk_check bad-umount umount /mnt/v
evmdk_check bad-close erofs-vmdk verity close bad

# A full check (the RAII device removes itself on success and on failure).
evmdk_check good-check erofs-vmdk verity check chk-good "$good" $(opts layer.opts)
evmdk_check_fails bad-check-fails erofs-vmdk verity check chk-bad "$bad" $(opts layer.opts)

evmdk_check_fails bad0-open-refused erofs-vmdk verity open bad0 "$bad0" $(opts layer.opts)
evmdk_check_fails wrongroot-open-refused erofs-vmdk verity open wrongroot "$good" $(opts wrongroot.opts)
evmdk_check_fails wrongalg-open-refused erofs-vmdk verity open wrongalg "$good" $(opts wrongalg.opts)
evmdk_check_fails nosb-open-refused erofs-vmdk verity open nosb "$good" $(opts nosb.opts)

evmdk_check nothing-listed sh -c 'listed=$(erofs-vmdk verity list) && echo "$listed" && test -z "$listed"'
evmdk_check no-mapper-node sh -c 'left=$(ls /dev/mapper | grep -v "^control$"); echo "$left"; test -z "$left"'
evmdk_check_clean at-end
)SH";

class VerityQemu : public QemuTest {};

TEST_F(VerityQemu, GuestActivatesVerifiesAndRefuses) {
  // A layer whose file spans many blocks, with a marker to find its data in the image.
  std::string big = "EVMDK-DATA-MARKER" + random_bytes(200000, 11);
  test::make_tree(path("src"), {{"big", big}, {"etc/motd", "hello\n"}});
  const std::string good = path("good.erofs"), bad = path("bad.erofs"), bad0 = path("bad0.erofs");
  test::make_erofs(path("src"), good);
  const uint64_t data_size = fs::file_size(good);
  host::verity_format(good, {});
  auto options = host::verity_options_for_layer(good, host::VerityPolicy::kOn);

  std::string image = test::read_file(good);
  size_t marker = image.find("EVMDK-DATA-MARKER");
  ASSERT_NE(marker, std::string::npos);
  ASSERT_GE(marker, 4096u);  // not in block 0, which activation itself verifies
  fs::copy_file(good, bad);
  flip_byte(bad, marker + 100000);
  fs::copy_file(good, bad0);
  flip_byte(bad0, 1024 + 200);  // inside block 0 (superblock's reserved area)

  GuestConfig cfg = config("verity");
  cfg.drives = {{good, "raw", true, "evmdk-verity-good"},
                {bad, "raw", true, "evmdk-verity-bad"},
                {bad0, "raw", true, "evmdk-verity-bad0"}};
  // The layers are opened by hand here, so storage.json is unused.
  auto job = scenario_job("[]", std::string(kScript));
  job.files = option_files(options);
  job.files["big.sha256"] = sha256_hex(big) + "\n";
  auto outcome = run_guest(env_, cfg, job);
  ASSERT_TRUE(guest_passed(
      outcome, expected_checks({"good-disk", "bad-disk", "bad0-disk", "good-open", "good-mount",
                                "good-reads-back", "good-umount", "good-close", "bad-open",
                                "bad-mount", "bad-read-fails", "bad-umount", "bad-close",
                                "good-check", "bad-check-fails", "bad0-open-refused",
                                "wrongroot-open-refused", "wrongalg-open-refused",
                                "nosb-open-refused", "nothing-listed", "no-mapper-node"},
                               {"at-end"})));
  SCOPED_TRACE("guest console:\n" + outcome.console);
  auto detail = [&](const std::string& name) { return outcome.find(name)->detail; };

  // Intact layer: activated at /dev/mapper/good.
  EXPECT_EQ(detail("good-open"), "/dev/mapper/good");
  // A flipped data byte: reading the file fails with an I/O error, never returns bad bytes.
  EXPECT_THAT(detail("bad-read-fails"), HasSubstr("Input/output error"));
  // A full check verifies every data byte of the intact layer, and names the bad block.
  EXPECT_THAT(detail("good-check"), HasSubstr(fmt::format("{}: {} bytes verified", detail("good-disk"), data_size)));
  EXPECT_THAT(detail("bad-check-fails"),
              HasSubstr(fmt::format("data fails verification at byte {}", (marker + 100000) / 4096 * 4096)));
  // Refused at activation, naming the device and the reason.
  EXPECT_THAT(detail("bad0-open-refused"), HasSubstr("does not verify the data"));
  EXPECT_THAT(detail("bad0-open-refused"), HasSubstr(detail("bad0-disk")));
  EXPECT_THAT(detail("wrongroot-open-refused"), HasSubstr("does not verify the data"));
  EXPECT_THAT(detail("wrongalg-open-refused"),
              HasSubstr("X-kata.dmverity.algorithm=sha512 disagrees with the superblock"));
}

}  // namespace
}  // namespace evmdk::qemu
