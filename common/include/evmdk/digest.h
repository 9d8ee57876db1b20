#pragma once
// SHA-256 (OpenSSL EVP) and hex text, shared by the host's identities, layout digests, hook
// serials and verify, and by the guest's verity checks.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental SHA-256. Throws evmdk::Error when OpenSSL fails (out of memory, a FIPS provider
// without SHA-256). Move-only; finish() may be called once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& update(const void* data, size_t size);
  Sha256& update(std::string_view bytes) { return update(bytes.data(), bytes.size()); }
  Sha256& update(std::span<const uint8_t> bytes) { return update(bytes.data(), bytes.size()); }
  Sha256Digest finish();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

// One-shot SHA-256.
Sha256Digest sha256(std::string_view bytes);
Sha256Digest sha256(std::span<const uint8_t> bytes);

// Lower-case hex of `bytes`.
std::string to_hex(std::span<const uint8_t> bytes);
inline std::string to_hex(const Sha256Digest& digest) { return to_hex(std::span(digest)); }
// Lower-case hex of the first `size` bytes at `data` (for char buffers).
std::string to_hex(const void* data, size_t size);

// Whether `text` is hex digits only (either case; empty counts). is_lower_hex: 0-9a-f only.
bool is_hex(std::string_view text);
bool is_lower_hex(std::string_view text);

// Bytes of an even-length hex string (either case); nullopt for an odd length or a non-hex
// character.
std::optional<std::vector<uint8_t>> parse_hex(std::string_view hex);
// The same, throwing evmdk::Error "<what> '<hex>' has an odd number of hex digits" or
// "<what> '<hex>' is not hex".
std::vector<uint8_t> from_hex(std::string_view hex, std::string_view what);
// A SHA-256 digest from exactly 64 hex digits (either case); nullopt otherwise.
std::optional<Sha256Digest> sha256_from_hex(std::string_view hex);

}  // namespace evmdk
