#pragma once
// The dm-verity superblock (veritysetup's on-disk format: 512 bytes, little-endian, at the
// hash offset, followed by the hash tree). One parser and one serialiser for the host's
// `verity format`, compose, verify and the CLI; the guest hands the same bytes to
// libcryptsetup but may check them here first.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::ondisk {

namespace verity {

inline constexpr size_t kSuperblockSize = 512;
inline constexpr std::array<char, 8> kSignature = {'v', 'e', 'r', 'i', 't', 'y', 0, 0};
inline constexpr size_t kAlgorithmSize = 32;  // NUL-padded name, so at most 31 characters
inline constexpr size_t kMaxSaltSize = 256;
inline constexpr uint32_t kMinBlockSize = 512;
inline constexpr uint32_t kMaxBlockSize = 1u << 20;

// Field offsets.
namespace sb {
inline constexpr size_t kSignature = 0;
inline constexpr size_t kVersion = 8;
inline constexpr size_t kHashType = 12;
inline constexpr size_t kUuid = 16;
inline constexpr size_t kAlgorithm = 32;
inline constexpr size_t kDataBlockSize = 64;
inline constexpr size_t kHashBlockSize = 68;
inline constexpr size_t kDataBlocks = 72;
inline constexpr size_t kSaltSize = 80;  // u16
inline constexpr size_t kSalt = 88;
static_assert(kSalt + verity::kMaxSaltSize <= verity::kSuperblockSize);
}  // namespace sb

}  // namespace verity

// Kept for the host's existing name.
inline constexpr size_t kVeritySuperblockSize = verity::kSuperblockSize;

struct VeritySuperblock {
  uint32_t version = 1;
  uint32_t hash_type = 1;
  std::array<uint8_t, 16> uuid{};
  std::string algorithm = "sha256";
  uint32_t data_block_size = 4096;
  uint32_t hash_block_size = 4096;
  uint64_t data_blocks = 0;
  std::vector<uint8_t> salt;  // at most 256 bytes
  bool operator==(const VeritySuperblock&) const = default;
};

// The hash algorithms a dm-verity superblock may name: sha256 and sha512 (what the guest's
// kernel is known to carry and the tools here are tested with).
bool verity_algorithm_allowed(std::string_view algorithm);

// Throws evmdk::Error starting with `context` unless: version 1, hash type 0 or 1, both block
// sizes powers of two in 512..1 MiB, data_blocks > 0, salt at most 256 bytes, algorithm 1..31
// characters and allowed.
void validate_verity_superblock(const VeritySuperblock& superblock, std::string_view context);

// Parses and validates (as above) the superblock at the start of `bytes` (at least 512).
// Throws evmdk::Error starting with `context` for a short span, a missing "verity" signature
// or a salt size above 256, and for any field validate_verity_superblock refuses.
VeritySuperblock parse_verity_superblock(std::span<const uint8_t> bytes, std::string_view context);

// The 512 bytes of a validated superblock (throws evmdk::Error as validate does, with context
// "dm-verity superblock").
std::array<uint8_t, verity::kSuperblockSize> serialize_verity_superblock(
    const VeritySuperblock& superblock);

}  // namespace evmdk::ondisk
