#include "evmdk/contract/dm_names.h"

#include <fmt/format.h>

#include "evmdk/checked_math.h"
#include "evmdk/error.h"

namespace evmdk::contract {
namespace {

constexpr std::string_view kDevicePart = "-device-";

}  // namespace

std::string verity_name_prefix(std::string_view container_id) {
  return fmt::format("evmdk-{}-lower-", container_id);
}

std::string format_verity_device_name(std::string_view container_id, const VerityDeviceName& name) {
  std::string out = fmt::format("{}{}", verity_name_prefix(container_id), name.layer);
  if (name.slot) out += fmt::format("{}{}", kDevicePart, *name.slot);
  return out;
}

std::string verity_device_name(std::string_view container_id, const VerityDeviceName& name) {
  std::string out = format_verity_device_name(container_id, name);
  if (out.size() > kMaxDmNameBytes) {
    throw Error(
        "container id '{}' is too long for its dm-verity device names ('{}' is {} "
        "bytes, device-mapper allows {})",
        container_id, out, out.size(), kMaxDmNameBytes);
  }
  return out;
}

std::optional<VerityDeviceName> parse_verity_device_name(std::string_view name,
                                                         std::string_view container_id) {
  std::string prefix = verity_name_prefix(container_id);
  if (name.size() > kMaxDmNameBytes || name.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  std::string_view rest = name.substr(prefix.size());
  VerityDeviceName out;
  size_t dash = rest.find(kDevicePart);
  auto layer = parse_decimal<uint32_t>(rest.substr(0, dash));
  if (!layer) return std::nullopt;
  out.layer = *layer;
  if (dash != std::string_view::npos) {
    auto slot = parse_decimal<uint32_t>(rest.substr(dash + kDevicePart.size()));
    if (!slot) return std::nullopt;
    out.slot = *slot;
  }
  return out;
}

std::string describe_verity_device(const VerityDeviceName& name) {
  if (name.slot) return fmt::format("lower-{} device {}", name.layer, *name.slot);
  return fmt::format("lower-{}", name.layer);
}

std::string loop_tag(std::string_view container_id) {
  return fmt::format("evmdk:{}", container_id).substr(0, kMaxLoopTagBytes);
}

std::optional<uint32_t> parse_loop_device_path(std::string_view path) {
  constexpr std::string_view kPrefix = "/dev/loop";
  if (path.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  return parse_decimal<uint32_t>(path.substr(kPrefix.size()), 1u << 20);
}

}  // namespace evmdk::contract
