#pragma once
// UUID text (8-4-4-4-12), shared by the EROFS superblock's UUID, dm-verity's and GPT GUIDs
// (in canonical byte order; ondisk/gpt.h converts the on-disk mixed-endian form).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace evmdk {

using Uuid = std::array<uint8_t, 16>;

// Canonical lower-case 8-4-4-4-12.
std::string format_uuid(const Uuid& uuid);
// 8-4-4-4-12 hex digits, either case; nullopt for anything else.
std::optional<Uuid> parse_uuid_text(std::string_view text);
// Compares UUID strings ignoring case and dashes.
bool same_uuid(std::string_view a, std::string_view b);

}  // namespace evmdk
