// containerd's layer.erofs.dmverity sidecar plus the dm-verity superblock it points at,
// turned into the X-kata.dmverity.* options the guest needs to open the verity device.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "evmdk/error.h"
#include "evmdk/host/hook.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

// The on-disk dm-verity superblock (cryptsetup's format): 512 bytes, little-endian.
constexpr size_t kVeritySuperblockSize = 512;
constexpr char kVeritySignature[8] = {'v', 'e', 'r', 'i', 't', 'y', 0, 0};

uint32_t le32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }
uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | p[1] << 8); }

std::string to_hex(const unsigned char* data, size_t size) {
  std::string out;
  for (size_t i = 0; i < size; ++i) out += fmt::format("{:02x}", data[i]);
  return out;
}

bool is_hex(const std::string& text) {
  return !text.empty() && text.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
}

bool power_of_two_block(uint32_t size) { return size >= 512 && size <= 65536 && (size & (size - 1)) == 0; }

}  // namespace

std::vector<std::string> dmverity_options(const std::string& layer, const std::string& sidecar) {
  std::ifstream in(sidecar, std::ios::binary);
  if (!in) throw Error("dm-verity sidecar {}: cannot read: {}", sidecar, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& error) {
    throw Error("dm-verity sidecar {}: not valid JSON: {}", sidecar, error.what());
  }
  if (!json.is_object() || !json.contains("roothash") || !json["roothash"].is_string()) {
    throw Error("dm-verity sidecar {}: missing string field 'roothash'", sidecar);
  }
  std::string roothash = json["roothash"].get<std::string>();
  if (!is_hex(roothash) || roothash.size() % 2 != 0 || roothash.size() < 40) {
    throw Error("dm-verity sidecar {}: roothash '{}' is not a hex digest", sidecar, roothash);
  }
  if (!json.contains("hashoffset") || !json["hashoffset"].is_number_unsigned()) {
    throw Error("dm-verity sidecar {}: missing unsigned number field 'hashoffset'", sidecar);
  }
  const uint64_t hashoffset = json["hashoffset"].get<uint64_t>();

  UniqueFd fd = open_or_throw(layer, O_RDONLY);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat {}", layer);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (hashoffset == 0 || hashoffset % 512 != 0 || hashoffset >= file_size) {
    throw Error("dm-verity sidecar {}: hashoffset {} is not a 512-aligned offset inside {} ({} bytes)",
                sidecar, hashoffset, layer, file_size);
  }

  unsigned char sb[kVeritySuperblockSize] = {};
  size_t got = pread_full(fd.get(), sb, sizeof sb, hashoffset, layer);
  std::vector<std::string> options{"X-kata.dmverity-enabled=true",
                                   "X-kata.dmverity.roothash=" + roothash,
                                   fmt::format("X-kata.dmverity.hashoffset={}", hashoffset)};
  if (got == sizeof sb && std::memcmp(sb, kVeritySignature, sizeof kVeritySignature) == 0) {
    const uint32_t version = le32(sb + 8);
    const uint32_t hash_type = le32(sb + 12);
    char algorithm[33] = {};
    std::memcpy(algorithm, sb + 32, 32);
    const uint32_t data_block_size = le32(sb + 64);
    const uint32_t hash_block_size = le32(sb + 68);
    const uint64_t data_blocks = le64(sb + 72);
    const uint16_t salt_size = le16(sb + 80);
    if (version != 1 || hash_type > 1 || !power_of_two_block(data_block_size) ||
        !power_of_two_block(hash_block_size) || salt_size > 256 || algorithm[0] == 0) {
      throw Error("{}: malformed dm-verity superblock at offset {} (version {}, hash type {}, "
                  "block sizes {}/{}, salt size {})",
                  layer, hashoffset, version, hash_type, data_block_size, hash_block_size,
                  salt_size);
    }
    if (data_blocks * data_block_size > hashoffset) {
      throw Error("{}: dm-verity superblock covers {} data blocks of {} bytes, past hashoffset {}",
                  layer, data_blocks, data_block_size, hashoffset);
    }
    options.push_back(fmt::format("X-kata.dmverity.blocksize={}", data_block_size));
    options.push_back(fmt::format("X-kata.dmverity.hashsize={}", hash_block_size));
    options.push_back(fmt::format("X-kata.dmverity.algorithm={}", algorithm));
    options.push_back("X-kata.dmverity.salt=" + to_hex(sb + 88, salt_size));
    options.push_back(fmt::format("X-kata.dmverity.hashtype={}", hash_type));
  } else {
    // No superblock: containerd's defaults (sha256, 4 KiB blocks, format 1, all-zero salt).
    options.push_back("X-kata.dmverity.blocksize=4096");
    options.push_back("X-kata.dmverity.hashsize=4096");
    options.push_back("X-kata.dmverity.algorithm=sha256");
    options.push_back("X-kata.dmverity.salt=" + std::string(64, '0'));
    options.push_back("X-kata.dmverity.hashtype=1");
    options.push_back("X-kata.dmverity.no-superblock=true");
  }
  return options;
}

}  // namespace evmdk::host
