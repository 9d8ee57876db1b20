#pragma once
// The Kata-compatible Storage object (kata-agent's protobuf `Storage`) that the host emits and
// the guest driver consumes, plus helpers for the `X-kata.*` option markers.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/contract/markers.h"
#include "evmdk/contract/verity_options.h"

namespace evmdk {

struct Storage {
  std::string driver;                       // "blk", "scsi", or "virtio-serial" style finder
  std::vector<std::string> driver_options;  // passed through
  std::string source;                       // /dev path, PCI path, or serial
  std::string fstype;                       // "erofs", "ext4", ...
  std::vector<std::string> options;         // mount options plus X-kata.* markers
  std::string mount_point;

  bool operator==(const Storage&) const = default;
};

// JSON field names match kata-agent's protobuf JSON: driver, driver_options, source, fstype,
// options, mount_point. Unknown fields are ignored when reading (fs_group, shared, ...).
nlohmann::json to_json(const Storage& storage);
Storage storage_from_json(const nlohmann::json& json);
std::vector<Storage> storages_from_json(const nlohmann::json& json);  // array of objects
nlohmann::json to_json(const std::vector<Storage>& storages);

// Option helpers. A marker is either "key" or "key=value".
bool has_option(const std::vector<std::string>& options, std::string_view key);
std::optional<std::string> option_value(const std::vector<std::string>& options,
                                        std::string_view key);
std::vector<std::string> option_values(const std::vector<std::string>& options,
                                       std::string_view key);

// The markers (evmdk::marker::*, an alias of evmdk::contract::marker) are in
// contract/markers.h.

// is_dmverity_option and the device-slot helpers (device_option_prefix,
// to_device_verity_options, device_verity_options, device_option_slots) moved to
// contract/verity_options.h; these names keep working.
using contract::device_option_prefix;
using contract::device_option_slots;
using contract::device_verity_options;
using contract::is_dmverity_option;
using contract::to_device_verity_options;

}  // namespace evmdk
