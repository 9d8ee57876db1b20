#include "evmdk/host/compose/disk_id.h"

#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"

namespace evmdk::host {

std::string to_string(DiskId id) { return id == DiskId::GptGuid ? "gpt-guid" : "serial"; }

DiskId parse_disk_id(const std::string& text, const std::string& option) {
  if (text == "serial") return DiskId::Serial;
  if (text == "gpt-guid") return DiskId::GptGuid;
  throw Error("{} '{}': expected serial or gpt-guid", option, text);
}

void check_disk_id(DiskId id, ComposeMode mode) {
  if (id != DiskId::GptGuid || mode == ComposeMode::Gpt) return;
  const char* why = mode == ComposeMode::Flat
                        ? "a flat disk has no partition table; use --disk-id serial"
                        : "a raw-mode disk is the layer itself, with no partition table; use "
                          "--mode gpt (one partition) or --disk-id serial";
  throw Error(
      "--disk-id gpt-guid needs gpt mode (the guest finds the disk by its GPT disk GUID), but "
      "this is {} mode: {}",
      to_string(mode), why);
}

std::string lower_storage_source(DiskId id, const ComposeResult& result) {
  if (id == DiskId::GptGuid) return contract::encode_gpt_disk_guid_source(result.disk_guid);
  return "serial:" + result.serial;
}

}  // namespace evmdk::host
