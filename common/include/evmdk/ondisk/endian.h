#pragma once
// The one little-endian load/store helper for on-disk formats (EROFS, GPT, dm-verity). Every
// format here is little-endian whatever the host is, so fields are assembled byte by byte
// rather than memcpy'd into host integers.
//
// Two flavours: pointer loads for code that has already checked its buffer is large enough
// (a fixed-size record), and span loads that check `offset + width <= size` themselves and
// throw evmdk::Error otherwise, for parsers walking untrusted bytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "evmdk/error.h"

namespace evmdk::ondisk {

// Unsigned little-endian integer of sizeof(T) bytes at `p`.
template <typename T>
constexpr T load_le(const void* p) noexcept {
  static_assert(std::is_unsigned_v<T>);
  const auto* bytes = static_cast<const unsigned char*>(p);
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= static_cast<T>(static_cast<T>(bytes[i]) << (8 * i));
  return value;
}

template <typename T>
constexpr void store_le(void* p, T value) noexcept {
  static_assert(std::is_unsigned_v<T>);
  auto* bytes = static_cast<unsigned char*>(p);
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
}

inline uint16_t load_le16(const void* p) noexcept { return load_le<uint16_t>(p); }
inline uint32_t load_le32(const void* p) noexcept { return load_le<uint32_t>(p); }
inline uint64_t load_le64(const void* p) noexcept { return load_le<uint64_t>(p); }
inline void store_le16(void* p, uint16_t value) noexcept { store_le(p, value); }
inline void store_le32(void* p, uint32_t value) noexcept { store_le(p, value); }
inline void store_le64(void* p, uint64_t value) noexcept { store_le(p, value); }

// Throws evmdk::Error when `width` bytes at `offset` do not lie inside a buffer of `size`.
inline void check_field(size_t size, size_t offset, size_t width) {
  if (offset > size || width > size - offset) {
    throw Error("on-disk field of {} bytes at offset {} lies outside a {}-byte buffer", width,
                offset, size);
  }
}

// Bounds-checked loads and stores from/into a span (any byte-sized element type).
template <typename T, typename Byte, size_t Extent>
T load_le(std::span<Byte, Extent> bytes, size_t offset) {
  static_assert(sizeof(Byte) == 1);
  check_field(bytes.size(), offset, sizeof(T));
  return load_le<T>(bytes.data() + offset);
}
template <typename Byte, size_t Extent>
uint16_t load_le16(std::span<Byte, Extent> bytes, size_t offset) {
  return load_le<uint16_t>(bytes, offset);
}
template <typename Byte, size_t Extent>
uint32_t load_le32(std::span<Byte, Extent> bytes, size_t offset) {
  return load_le<uint32_t>(bytes, offset);
}
template <typename Byte, size_t Extent>
uint64_t load_le64(std::span<Byte, Extent> bytes, size_t offset) {
  return load_le<uint64_t>(bytes, offset);
}
template <typename T, typename Byte, size_t Extent>
void store_le(std::span<Byte, Extent> bytes, size_t offset, T value) {
  static_assert(sizeof(Byte) == 1 && !std::is_const_v<Byte>);
  check_field(bytes.size(), offset, sizeof(T));
  store_le<T>(bytes.data() + offset, value);
}

// A byte view of any contiguous byte container (std::string, std::vector<char>, arrays), for
// the span parsers: byte_view(text) instead of reinterpret_casts at every call site.
template <typename Container>
std::span<const uint8_t> byte_view(const Container& bytes) noexcept {
  static_assert(sizeof(*std::data(bytes)) == 1);
  return {reinterpret_cast<const uint8_t*>(std::data(bytes)), std::size(bytes)};
}

}  // namespace evmdk::ondisk
