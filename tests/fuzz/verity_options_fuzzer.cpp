// libFuzzer target for the host <-> guest dm-verity contract
// (common/include/evmdk/contract/verity_options.h) and the dm names: the input is a storage's
// option list, one option per line. Whatever the decoder accepts, the encoder writes back
// into options that decode to the same parameters (for the storage and for a device slot);
// a device name built from the input parses back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/contract/dm_names.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "fuzz_support.h"

using evmdk::fuzz::check;
namespace contract = evmdk::contract;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> options;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    options.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  try {
    if (auto decoded = contract::decode_verity_options(options, "fuzz")) {
      check(!decoded->root_hash.empty() && decoded->root_hash.size() % 2 == 0, "root hash hex");
      check(decoded->hash_offset % 512 == 0, "hash offset aligned");
      std::vector<std::string> encoded;
      try {
        encoded = contract::encode_verity_options(*decoded);
      } catch (const evmdk::Error&) {
        check(false, "the encoder takes everything the decoder returns");
      }
      check(contract::decode_verity_options(encoded, "again") == decoded, "round trip");
      auto device = contract::encode_device_verity_options(*decoded, 5);
      auto slots = contract::decode_device_verity_options(device, "again", 8);
      check(slots.size() == 1 && slots[0].first == 5 && slots[0].second == *decoded,
            "device slot round trip");
    }
  } catch (const evmdk::Error&) {}
  try {
    (void)contract::decode_device_verity_options(options, "fuzz", 1024);
  } catch (const evmdk::Error&) {}
  // dm names: the first line as a device name of container "c", and of itself.
  if (auto name = contract::parse_verity_device_name(options.front(), "c")) {
    check(contract::format_verity_device_name("c", *name).size() <= options.front().size(),
          "a parsed name is at most as long as its text");
    check(contract::parse_verity_device_name(contract::verity_device_name("c", *name), "c") == name,
          "names round-trip");
  }
  (void)contract::parse_loop_device_path(options.front());
  return 0;
}
