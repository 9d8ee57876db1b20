#pragma once
// Overflow-checked arithmetic and strict number parsing for values read from untrusted input
// (storages, mount lists, journals, on-disk headers): a value that does not fit is an error
// naming what it was, never a wrap.
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

#include "evmdk/error.h"

namespace evmdk {

// a + b, or nullopt when it does not fit in T.
template <typename T>
constexpr std::optional<T> add_checked(T a, T b) {
  static_assert(std::is_integral_v<T>);
  T out{};
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// a * b, or nullopt when it does not fit in T.
template <typename T>
constexpr std::optional<T> mul_checked(T a, T b) {
  static_assert(std::is_integral_v<T>);
  T out{};
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// The same, throwing an Error "<what>: <a> + <b> overflows" instead.
template <typename T>
T add_or_throw(T a, T b, std::string_view what) {
  if (auto out = add_checked(a, b)) return *out;
  throw Error("{}: {} + {} does not fit in {} bits", what, a, b, std::numeric_limits<T>::digits);
}
template <typename T>
T mul_or_throw(T a, T b, std::string_view what) {
  if (auto out = mul_checked(a, b)) return *out;
  throw Error("{}: {} * {} does not fit in {} bits", what, a, b, std::numeric_limits<T>::digits);
}

// Strict unsigned decimal: digits only (no sign, space, hex or trailing text), at most `max`.
// nullopt for anything else, including values that do not fit.
template <typename T = uint64_t>
constexpr std::optional<T> parse_decimal(std::string_view text,
                                         T max = std::numeric_limits<T>::max()) {
  static_assert(std::is_unsigned_v<T>);
  if (text.empty() || text.size() > 20) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

// parse_decimal that throws an Error naming `what` and the allowed range.
template <typename T = uint64_t>
T parse_decimal_or_throw(std::string_view text, std::string_view what, T min = 0,
                         T max = std::numeric_limits<T>::max()) {
  auto value = parse_decimal<T>(text, max);
  if (!value || *value < min) {
    throw Error("{}: '{}' is not a whole number in {}..{}", what, text, min, max);
  }
  return *value;
}

}  // namespace evmdk
