#pragma once
// The names the guest gives the kernel objects it creates for a container, built and parsed
// back in one place (mount builds them, teardown, the journal check and `guest status` parse
// them): dm-verity devices "evmdk-<id>-lower-<layer>" and "evmdk-<id>-lower-<layer>-device-
// <slot>" (at most 127 bytes, device-mapper's limit), and the loop devices' backing-file tag
// "evmdk:<id>" (lo_file_name, cut to 63 bytes). The id is a valid container id
// (contract/container_id.h), so a name never holds a '/'.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace evmdk::contract {

inline constexpr size_t kMaxDmNameBytes = 127;
inline constexpr size_t kMaxLoopTagBytes = 63;

// "evmdk-<id>-lower-": every verity device name of this container starts so.
std::string verity_name_prefix(std::string_view container_id);

// A verity device of lower `layer` (0 = top), for the storage's own device (no slot) or extra
// device `slot` (1..) of a flat disk.
struct VerityDeviceName {
  uint32_t layer = 0;
  std::optional<uint32_t> slot;
  bool operator==(const VerityDeviceName&) const = default;
};

// "evmdk-<id>-lower-<layer>[-device-<slot>]". Throws evmdk::Error naming the container id
// when the name would be longer than 127 bytes:
//   "container id '<id>' is too long for its dm-verity device names ('<name>' is <n> bytes,
//    device-mapper allows 127)"
std::string verity_device_name(std::string_view container_id, const VerityDeviceName& name);
// The same without the length check (for messages about names that may be too long).
std::string format_verity_device_name(std::string_view container_id, const VerityDeviceName& name);

// The layer and slot of `name` when it is one of this container's verity device names
// (exactly the form above, plain decimal numbers below 2^32, at most 127 bytes); nullopt for
// anything else (another container's device, a foreign name).
std::optional<VerityDeviceName> parse_verity_device_name(std::string_view name,
                                                         std::string_view container_id);

// "lower-<layer>" or "lower-<layer> device <slot>": which layer a device name is about, for
// messages and `guest status`.
std::string describe_verity_device(const VerityDeviceName& name);

// "evmdk:<id>", cut to 63 bytes: the lo_file_name of this container's loop devices.
std::string loop_tag(std::string_view container_id);

// N of "/dev/loopN" (plain decimal, N <= 2^20); nullopt for any other path.
std::optional<uint32_t> parse_loop_device_path(std::string_view path);

}  // namespace evmdk::contract
