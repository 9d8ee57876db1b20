#include "evmdk/ondisk/verity.h"

#include <bit>
#include <cstring>

#include "evmdk/error.h"
#include "evmdk/ondisk/endian.h"

namespace evmdk::ondisk {

bool verity_algorithm_allowed(std::string_view algorithm) {
  return algorithm == "sha256" || algorithm == "sha512";
}

void validate_verity_superblock(const VeritySuperblock& sb, std::string_view context) {
  auto bad_block_size = [](uint32_t size) {
    return size < verity::kMinBlockSize || size > verity::kMaxBlockSize ||
           !std::has_single_bit(size);
  };
  if (sb.version != 1) {
    throw Error("{}: unsupported dm-verity superblock version {}", context, sb.version);
  }
  if (sb.hash_type > 1)
    throw Error("{}: unsupported dm-verity hash type {}", context, sb.hash_type);
  if (bad_block_size(sb.data_block_size)) {
    throw Error("{}: invalid data block size {}", context, sb.data_block_size);
  }
  if (bad_block_size(sb.hash_block_size)) {
    throw Error("{}: invalid hash block size {}", context, sb.hash_block_size);
  }
  if (sb.data_blocks == 0) throw Error("{}: dm-verity superblock says 0 data blocks", context);
  if (sb.salt.size() > verity::kMaxSaltSize) {
    throw Error("{}: salt of {} bytes is longer than 256", context, sb.salt.size());
  }
  if (sb.algorithm.empty() || sb.algorithm.size() >= verity::kAlgorithmSize) {
    throw Error("{}: invalid hash algorithm name '{}'", context, sb.algorithm);
  }
  if (!verity_algorithm_allowed(sb.algorithm)) {
    throw Error("{}: dm-verity hash algorithm '{}' is not allowed (only sha256 and sha512)",
                context, sb.algorithm);
  }
}

VeritySuperblock parse_verity_superblock(std::span<const uint8_t> bytes, std::string_view context) {
  if (bytes.size() < verity::kSuperblockSize) {
    throw Error("{}: dm-verity superblock truncated", context);
  }
  const uint8_t* p = bytes.data();
  if (std::memcmp(p + verity::sb::kSignature, verity::kSignature.data(),
                  verity::kSignature.size()) != 0) {
    throw Error("{}: no dm-verity superblock (signature \"verity\" missing)", context);
  }
  VeritySuperblock sb;
  sb.version = load_le32(p + verity::sb::kVersion);
  sb.hash_type = load_le32(p + verity::sb::kHashType);
  std::memcpy(sb.uuid.data(), p + verity::sb::kUuid, sb.uuid.size());
  const char* algorithm = reinterpret_cast<const char*>(p + verity::sb::kAlgorithm);
  sb.algorithm.assign(algorithm, strnlen(algorithm, verity::kAlgorithmSize));
  sb.data_block_size = load_le32(p + verity::sb::kDataBlockSize);
  sb.hash_block_size = load_le32(p + verity::sb::kHashBlockSize);
  sb.data_blocks = load_le64(p + verity::sb::kDataBlocks);
  uint16_t salt_size = load_le16(p + verity::sb::kSaltSize);
  if (salt_size > verity::kMaxSaltSize) {
    throw Error("{}: salt size {} is larger than 256", context, salt_size);
  }
  sb.salt.assign(p + verity::sb::kSalt, p + verity::sb::kSalt + salt_size);
  validate_verity_superblock(sb, context);
  return sb;
}

std::array<uint8_t, verity::kSuperblockSize> serialize_verity_superblock(
    const VeritySuperblock& sb) {
  validate_verity_superblock(sb, "dm-verity superblock");
  std::array<uint8_t, verity::kSuperblockSize> out{};
  uint8_t* p = out.data();
  std::memcpy(p + verity::sb::kSignature, verity::kSignature.data(), verity::kSignature.size());
  store_le32(p + verity::sb::kVersion, sb.version);
  store_le32(p + verity::sb::kHashType, sb.hash_type);
  std::memcpy(p + verity::sb::kUuid, sb.uuid.data(), sb.uuid.size());
  std::memcpy(p + verity::sb::kAlgorithm, sb.algorithm.data(), sb.algorithm.size());
  store_le32(p + verity::sb::kDataBlockSize, sb.data_block_size);
  store_le32(p + verity::sb::kHashBlockSize, sb.hash_block_size);
  store_le64(p + verity::sb::kDataBlocks, sb.data_blocks);
  store_le16(p + verity::sb::kSaltSize, static_cast<uint16_t>(sb.salt.size()));
  if (!sb.salt.empty()) std::memcpy(p + verity::sb::kSalt, sb.salt.data(), sb.salt.size());
  return out;
}

}  // namespace evmdk::ondisk
