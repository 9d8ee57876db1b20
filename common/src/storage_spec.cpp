#include "evmdk/storage_spec.h"

#include <algorithm>

#include "evmdk/error.h"

namespace evmdk {
namespace {

// A NUL would cut the string short where it reaches the kernel (a mount source, an option).
std::string checked_string(std::string value, const char* name) {
  if (value.find('\0') != std::string::npos)
    throw Error("storage field '{}' contains a NUL byte", name);
  return value;
}

std::string string_field(const nlohmann::json& json, const char* name) {
  auto it = json.find(name);
  if (it == json.end() || it->is_null()) return {};
  if (!it->is_string())
    throw Error("storage field '{}' must be a string, not {}", name, it->type_name());
  return checked_string(it->get<std::string>(), name);
}

std::vector<std::string> list_field(const nlohmann::json& json, const char* name) {
  auto it = json.find(name);
  if (it == json.end() || it->is_null()) return {};
  if (!it->is_array())
    throw Error("storage field '{}' must be an array of strings, not {}", name, it->type_name());
  std::vector<std::string> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& item = (*it)[i];
    if (!item.is_string()) {
      throw Error("storage field '{}' item {} must be a string, not {}", name, i, item.type_name());
    }
    out.push_back(checked_string(item.get<std::string>(), name));
  }
  return out;
}

std::string_view key_of(std::string_view option) {
  auto eq = option.find('=');
  return eq == std::string_view::npos ? option : option.substr(0, eq);
}

}  // namespace

nlohmann::json to_json(const Storage& storage) {
  return nlohmann::json{{"driver", storage.driver},   {"driver_options", storage.driver_options},
                        {"source", storage.source},   {"fstype", storage.fstype},
                        {"options", storage.options}, {"mount_point", storage.mount_point}};
}

Storage storage_from_json(const nlohmann::json& json) {
  if (!json.is_object()) throw Error("storage must be a JSON object");
  Storage storage;
  storage.driver = string_field(json, "driver");
  storage.driver_options = list_field(json, "driver_options");
  storage.source = string_field(json, "source");
  storage.fstype = string_field(json, "fstype");
  storage.options = list_field(json, "options");
  storage.mount_point = string_field(json, "mount_point");
  return storage;
}

std::vector<Storage> storages_from_json(const nlohmann::json& json) {
  if (!json.is_array()) throw Error("storages must be a JSON array");
  std::vector<Storage> out;
  for (size_t i = 0; i < json.size(); ++i) {
    try {
      out.push_back(storage_from_json(json[i]));
    } catch (const Error& error) {
      const auto& item = json[i];
      auto source = item.is_object() ? item.find("source") : item.end();
      if (item.is_object() && source != item.end() && source->is_string() &&
          source->get<std::string>().find('\0') == std::string::npos) {
        throw Error("storage #{} '{}': {}", i, source->get<std::string>(), error.what());
      }
      throw Error("storage #{}: {}", i, error.what());
    }
  }
  return out;
}

nlohmann::json to_json(const std::vector<Storage>& storages) {
  auto out = nlohmann::json::array();
  for (const auto& storage : storages) out.push_back(to_json(storage));
  return out;
}

bool has_option(const std::vector<std::string>& options, std::string_view key) {
  for (const auto& option : options) {
    if (key_of(option) == key) return true;
  }
  return false;
}

std::optional<std::string> option_value(const std::vector<std::string>& options,
                                        std::string_view key) {
  for (const auto& option : options) {
    if (key_of(option) == key && option.size() > key.size()) return option.substr(key.size() + 1);
  }
  return std::nullopt;
}

std::vector<std::string> option_values(const std::vector<std::string>& options,
                                       std::string_view key) {
  std::vector<std::string> out;
  for (const auto& option : options) {
    if (key_of(option) == key && option.size() > key.size())
      out.push_back(option.substr(key.size() + 1));
  }
  return out;
}

}  // namespace evmdk
