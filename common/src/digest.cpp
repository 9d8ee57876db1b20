#include "evmdk/digest.h"

#include <openssl/evp.h>

#include "evmdk/error.h"
#include "evmdk/openssl_ptr.h"

namespace evmdk {

struct Sha256::Context {
  EvpMdCtxPtr ctx;
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  context_->ctx.reset(EVP_MD_CTX_new());
  if (!context_->ctx || EVP_DigestInit_ex(context_->ctx.get(), EVP_sha256(), nullptr) != 1) {
    throw Error("cannot initialise SHA-256 (OpenSSL)");
  }
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

Sha256& Sha256::update(const void* data, size_t size) {
  if (!context_ || !context_->ctx) throw Error("SHA-256 update after finish");
  if (size > 0 && EVP_DigestUpdate(context_->ctx.get(), data, size) != 1) {
    throw Error("SHA-256 update failed (OpenSSL)");
  }
  return *this;
}

Sha256Digest Sha256::finish() {
  if (!context_ || !context_->ctx) throw Error("SHA-256 finished twice");
  Sha256Digest digest{};
  unsigned length = 0;
  if (EVP_DigestFinal_ex(context_->ctx.get(), digest.data(), &length) != 1 ||
      length != digest.size()) {
    throw Error("SHA-256 final failed (OpenSSL)");
  }
  context_->ctx.reset();
  return digest;
}

Sha256Digest sha256(std::string_view bytes) { return Sha256().update(bytes).finish(); }
Sha256Digest sha256(std::span<const uint8_t> bytes) { return Sha256().update(bytes).finish(); }

std::string to_hex(const void* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  return out;
}

std::string to_hex(std::span<const uint8_t> bytes) { return to_hex(bytes.data(), bytes.size()); }

namespace {

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool is_hex(std::string_view text) {
  for (char c : text) {
    if (nibble(c) < 0) return false;
  }
  return true;
}

bool is_lower_hex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::optional<std::vector<uint8_t>> parse_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int high = nibble(hex[i]), low = nibble(hex[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>(high << 4 | low));
  }
  return out;
}

std::vector<uint8_t> from_hex(std::string_view hex, std::string_view what) {
  if (hex.size() % 2 != 0) throw Error("{} '{}' has an odd number of hex digits", what, hex);
  auto bytes = parse_hex(hex);
  if (!bytes) throw Error("{} '{}' is not hex", what, hex);
  return std::move(*bytes);
}

std::optional<Sha256Digest> sha256_from_hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  auto bytes = parse_hex(hex);
  if (!bytes) return std::nullopt;
  Sha256Digest digest{};
  std::copy(bytes->begin(), bytes->end(), digest.begin());
  return digest;
}

}  // namespace evmdk
