#include "evmdk/uuid.h"

#include <fmt/format.h>

#include <cctype>

namespace evmdk {

std::string format_uuid(const Uuid& u) {
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
      u[15]);
}

std::optional<Uuid> parse_uuid_text(std::string_view text) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (text.size() != 36) return std::nullopt;
  Uuid uuid{};
  size_t out = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int high = nibble(text[i]), low = nibble(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    uuid[out++] = static_cast<uint8_t>(high * 16 + low);
    i += 2;
  }
  return uuid;
}

bool same_uuid(std::string_view a, std::string_view b) {
  auto normal = [](std::string_view s) {
    std::string out;
    for (char c : s) {
      if (c != '-') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
  };
  return normal(a) == normal(b);
}

}  // namespace evmdk
