#include "evmdk/contract/verity_options.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "evmdk/contract/markers.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/storage_spec.h"

namespace evmdk::contract {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The single value of `key`; a repeated key is ambiguous and refused.
std::optional<std::string> single_value(const std::vector<std::string>& options,
                                        std::string_view key, std::string_view context) {
  auto values = option_values(options, key);
  if (values.size() > 1) throw Error("{}: option {} given {} times", context, key, values.size());
  if (values.empty()) {
    if (has_option(options, key)) {
      throw Error("{}: option {} needs a value ({}=...)", context, key, key);
    }
    return std::nullopt;
  }
  return values.front();
}

uint64_t parse_u64(std::string_view value, std::string_view key, std::string_view context) {
  uint64_t out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out, 10);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    throw Error("{}: option {}={} is not a decimal number", context, key, value);
  }
  return out;
}

uint32_t parse_block_size(std::string_view value, std::string_view key, std::string_view context) {
  uint64_t size = parse_u64(value, key, context);
  if (size < 512 || size > (1u << 20) || (size & (size - 1)) != 0) {
    throw Error("{}: option {}={} must be a power of two between 512 and 1048576", context, key,
                value);
  }
  return static_cast<uint32_t>(size);
}

bool parse_bool(std::string_view value, std::string_view key, std::string_view context) {
  std::string v = lower(value);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw Error("{}: option {}={} must be true or false", context, key, value);
}

constexpr std::string_view kKnownKeys[] = {
    marker::kDmverityRoothash, marker::kDmverityHashoffset,  marker::kDmverityBlocksize,
    marker::kDmverityHashsize, marker::kDmverityAlgorithm,   marker::kDmveritySalt,
    marker::kDmverityHashtype, marker::kDmverityNoSuperblock};

}  // namespace

std::optional<VerityOptions> decode_verity_options(const std::vector<std::string>& options,
                                                   std::string_view context) {
  bool any_dmverity_key = false;
  for (const auto& option : options) {
    std::string_view key = option_key(option);
    if (key.rfind(marker::kDmverityKeyPrefix, 0) != 0) continue;
    any_dmverity_key = true;
    if (std::find(std::begin(kKnownKeys), std::end(kKnownKeys), key) == std::end(kKnownKeys)) {
      throw Error("{}: unknown dm-verity option {}", context, key);
    }
  }
  auto enabled_value = single_value(options, marker::kDmverityEnabled, context);
  bool enabled = enabled_value && parse_bool(*enabled_value, marker::kDmverityEnabled, context);
  if (!enabled) {
    if (enabled_value && any_dmverity_key) {
      throw Error(
          "{}: {}={} but X-kata.dmverity.* options are present; refusing to mount "
          "a layer meant to be protected without dm-verity",
          context, marker::kDmverityEnabled, *enabled_value);
    }
    if (!any_dmverity_key) return std::nullopt;
    // dmverity.* options without the enable marker: the host meant protection.
  }

  VerityOptions out;
  auto root_hash = single_value(options, marker::kDmverityRoothash, context);
  if (!root_hash) {
    throw Error("{}: dm-verity enabled but option {} is missing", context,
                marker::kDmverityRoothash);
  }
  if (root_hash->empty() || root_hash->size() % 2 != 0 || !is_hex(*root_hash)) {
    throw Error("{}: option {}={} is not an even-length hex string", context,
                marker::kDmverityRoothash, *root_hash);
  }
  out.root_hash = lower(*root_hash);

  auto hash_offset = single_value(options, marker::kDmverityHashoffset, context);
  if (!hash_offset) {
    throw Error("{}: dm-verity enabled but option {} is missing", context,
                marker::kDmverityHashoffset);
  }
  out.hash_offset = parse_u64(*hash_offset, marker::kDmverityHashoffset, context);
  if (out.hash_offset % 512 != 0) {
    throw Error("{}: option {}={} is not a multiple of 512", context, marker::kDmverityHashoffset,
                *hash_offset);
  }

  if (auto v = single_value(options, marker::kDmverityBlocksize, context)) {
    out.data_block_size = parse_block_size(*v, marker::kDmverityBlocksize, context);
  }
  if (auto v = single_value(options, marker::kDmverityHashsize, context)) {
    out.hash_block_size = parse_block_size(*v, marker::kDmverityHashsize, context);
  }
  if (auto v = single_value(options, marker::kDmverityAlgorithm, context)) {
    if (v->empty() || v->size() > 31 || !std::all_of(v->begin(), v->end(), [](unsigned char c) {
          return std::isalnum(c) || c == '-' || c == '_';
        })) {
      throw Error("{}: option {}={} is not a hash algorithm name", context,
                  marker::kDmverityAlgorithm, *v);
    }
    out.algorithm = lower(*v);
  }
  if (auto v = single_value(options, marker::kDmveritySalt, context)) {
    std::string salt = *v == "-" ? std::string() : lower(*v);
    if (salt.size() % 2 != 0 || !is_hex(salt) || salt.size() > 512) {
      throw Error("{}: option {}={} is not a hex string of at most 256 bytes (or '-')", context,
                  marker::kDmveritySalt, *v);
    }
    out.salt = salt;
  } else if (has_option(options, marker::kDmveritySalt)) {
    out.salt = std::string();  // "X-kata.dmverity.salt=": explicitly no salt
  }
  if (auto v = single_value(options, marker::kDmverityHashtype, context)) {
    uint64_t type = parse_u64(*v, marker::kDmverityHashtype, context);
    if (type > 1) {
      throw Error("{}: option {}={} must be 0 or 1", context, marker::kDmverityHashtype, *v);
    }
    out.hash_type = static_cast<uint32_t>(type);
  }
  if (has_option(options, marker::kDmverityNoSuperblock)) {
    auto v = option_value(options, marker::kDmverityNoSuperblock);
    out.no_superblock = !v || parse_bool(*v, marker::kDmverityNoSuperblock, context);
  }
  if (out.no_superblock && out.hash_offset == 0) {
    throw Error("{}: {} needs {} > 0: the data area is the bytes before the hash tree", context,
                marker::kDmverityNoSuperblock, marker::kDmverityHashoffset);
  }
  return out;
}

std::vector<std::string> encode_verity_options(const VerityOptions& options) {
  std::vector<std::string> out;
  out.push_back(make_option(marker::kDmverityEnabled, "true"));
  out.push_back(make_option(marker::kDmverityRoothash, options.root_hash));
  out.push_back(make_option(marker::kDmverityHashoffset, options.hash_offset));
  if (options.data_block_size) {
    out.push_back(make_option(marker::kDmverityBlocksize, *options.data_block_size));
  }
  if (options.hash_block_size) {
    out.push_back(make_option(marker::kDmverityHashsize, *options.hash_block_size));
  }
  if (options.algorithm) out.push_back(make_option(marker::kDmverityAlgorithm, *options.algorithm));
  if (options.salt) {
    out.push_back(make_option(marker::kDmveritySalt, options.salt->empty() ? "-" : *options.salt));
  }
  if (options.hash_type) out.push_back(make_option(marker::kDmverityHashtype, *options.hash_type));
  if (options.no_superblock) out.push_back(make_option(marker::kDmverityNoSuperblock, "true"));
  // What the guest would refuse is refused here, with the guest's reason; and what it reads
  // back must be what was meant (upper-case hex would be lowered, for one).
  std::optional<VerityOptions> decoded = decode_verity_options(out, "dm-verity options");
  if (!decoded || *decoded != options) {
    throw Error(
        "dm-verity options: root hash '{}', algorithm '{}' or salt '{}' is not in the "
        "lower-case form the guest reads back",
        options.root_hash, options.algorithm.value_or(""), options.salt.value_or(""));
  }
  return out;
}

bool is_dmverity_option(std::string_view option) {
  return option.rfind(marker::kDmverityPrefix, 0) == 0 &&
         (option.size() == marker::kDmverityPrefix.size() ||
          option[marker::kDmverityPrefix.size()] == '.' ||
          option[marker::kDmverityPrefix.size()] == '-' ||
          option[marker::kDmverityPrefix.size()] == '=');
}

std::string device_option_prefix(unsigned slot) {
  return fmt::format("{}{}.", marker::kDevicePrefix, slot);
}

std::vector<std::string> to_device_verity_options(const std::vector<std::string>& options,
                                                  unsigned slot) {
  std::vector<std::string> out;
  for (const auto& option : options) {
    if (!is_dmverity_option(option)) continue;
    out.push_back(device_option_prefix(slot) + option.substr(marker::kKataPrefix.size()));
  }
  return out;
}

std::vector<std::string> device_verity_options(const std::vector<std::string>& options,
                                               unsigned slot) {
  std::string prefix = device_option_prefix(slot);
  std::vector<std::string> out;
  for (const auto& option : options) {
    if (option.rfind(prefix, 0) != 0) continue;
    out.push_back(std::string(marker::kKataPrefix) + option.substr(prefix.size()));
  }
  return out;
}

std::vector<unsigned> device_option_slots(const std::vector<std::string>& options) {
  std::vector<unsigned> slots;
  for (const auto& option : options) {
    if (option.rfind(marker::kDevicePrefix, 0) != 0) continue;
    std::string_view rest = std::string_view(option).substr(marker::kDevicePrefix.size());
    size_t dot = rest.find('.');
    std::string_view number = rest.substr(0, dot);
    unsigned slot = 0;
    auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), slot);
    if (dot == std::string_view::npos || number.empty() || error != std::errc() ||
        end != number.data() + number.size() || slot == 0) {
      throw Error("option {}: expected {}<slot>.<key> with a device slot 1, 2, ...", option,
                  marker::kDevicePrefix);
    }
    if (std::find(slots.begin(), slots.end(), slot) == slots.end()) slots.push_back(slot);
  }
  std::sort(slots.begin(), slots.end());
  return slots;
}

std::vector<std::string> encode_device_verity_options(const VerityOptions& options, unsigned slot) {
  if (slot == 0) throw Error("dm-verity options: device slots start at 1");
  return to_device_verity_options(encode_verity_options(options), slot);
}

std::vector<std::pair<unsigned, VerityOptions>> decode_device_verity_options(
    const std::vector<std::string>& options, std::string_view context, unsigned max_slot) {
  std::vector<std::pair<unsigned, VerityOptions>> out;
  for (unsigned slot : device_option_slots(options)) {
    std::string slot_context = fmt::format("{}, device {}", context, slot);
    if (slot > max_slot) {
      throw Error("{}: an EROFS image has at most {} extra devices", slot_context, max_slot);
    }
    auto slot_options = device_verity_options(options, slot);
    for (const auto& option : slot_options) {
      if (!is_dmverity_option(option)) {
        throw Error(
            "{}: option {}{} is not a dm-verity option (only {}<slot>.dmverity* are "
            "known)",
            slot_context, device_option_prefix(slot), option.substr(marker::kKataPrefix.size()),
            marker::kDevicePrefix);
      }
    }
    if (auto decoded = decode_verity_options(slot_options, slot_context)) {
      out.emplace_back(slot, std::move(*decoded));
    }
  }
  return out;
}

}  // namespace evmdk::contract
