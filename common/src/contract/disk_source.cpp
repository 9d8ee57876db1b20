#include "evmdk/contract/disk_source.h"

#include "evmdk/error.h"

namespace evmdk::contract {

bool is_gpt_disk_guid_source(std::string_view source) {
  return source.substr(0, kGptDiskGuidSourcePrefix.size()) == kGptDiskGuidSourcePrefix;
}

ondisk::Guid decode_gpt_disk_guid_source(std::string_view source) {
  if (!is_gpt_disk_guid_source(source)) {
    throw Error("storage source '{}': does not start with {}", source, kGptDiskGuidSourcePrefix);
  }
  std::string_view text = source.substr(kGptDiskGuidSourcePrefix.size());
  auto guid = ondisk::parse_guid(text);
  // parse_guid takes either case; the canonical form round-trips exactly.
  if (!guid || ondisk::format_guid(*guid) != text) {
    throw Error(
        "storage source '{}': expected {}<GUID> with the GPT disk GUID as 36 characters of "
        "lower-case hex, 8-4-4-4-12 (e.g. {}0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)",
        source, kGptDiskGuidSourcePrefix, kGptDiskGuidSourcePrefix);
  }
  return *guid;
}

std::string encode_gpt_disk_guid_source(const ondisk::Guid& guid) {
  std::string source = std::string(kGptDiskGuidSourcePrefix) + ondisk::format_guid(guid);
  (void)decode_gpt_disk_guid_source(source);  // one grammar: what is written is read back
  return source;
}

std::string encode_gpt_disk_guid_source(std::string_view guid_text) {
  auto guid = ondisk::parse_guid(guid_text);
  if (!guid) throw Error("GPT disk GUID '{}' is not 8-4-4-4-12 hex", guid_text);
  return encode_gpt_disk_guid_source(*guid);
}

}  // namespace evmdk::contract
