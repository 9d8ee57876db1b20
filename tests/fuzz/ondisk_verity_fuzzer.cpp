// libFuzzer target for the shared dm-verity superblock (common/include/evmdk/ondisk/verity.h):
// anything accepted is valid by validate_verity_superblock and serialises back to the same
// 512 bytes where the format defines them (the signature, fields and salt; padding is zero).
#include <cstddef>
#include <cstdint>
#include <span>

#include "evmdk/error.h"
#include "evmdk/ondisk/verity.h"
#include "fuzz_support.h"

using evmdk::fuzz::check;
namespace ondisk = evmdk::ondisk;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ondisk::VeritySuperblock sb = ondisk::parse_verity_superblock(std::span(data, size), "fuzz");
    check(size >= 512, "a superblock needs 512 bytes");
    check(sb.salt.size() <= 256, "salt bounded");
    check(ondisk::verity_algorithm_allowed(sb.algorithm), "only allowed algorithms");
    ondisk::validate_verity_superblock(sb, "fuzz");
    auto bytes = ondisk::serialize_verity_superblock(sb);
    check(ondisk::parse_verity_superblock(bytes, "again") == sb, "serialise round-trips");
  } catch (const evmdk::Error&) {}
  return 0;
}
