#include "evmdk/contract/pmem.h"

#include <algorithm>
#include <cctype>

#include "evmdk/contract/markers.h"
#include "evmdk/error.h"
#include "evmdk/storage_spec.h"

namespace evmdk::contract {
namespace {

bool lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
  });
}

// DDDD:BB:DD.F as sysfs names PCI functions: a 4-digit domain, 2-digit bus, a device below
// 0x20 and a function 0-7, lower-case hex.
bool pci_address(std::string_view text) {
  if (text.size() != 12 || text[4] != ':' || text[7] != ':' || text[10] != '.') return false;
  if (!lower_hex(text.substr(0, 4)) || !lower_hex(text.substr(5, 2)) ||
      !lower_hex(text.substr(8, 2))) {
    return false;
  }
  unsigned device = static_cast<unsigned>(std::stoul(std::string(text.substr(8, 2)), nullptr, 16));
  return device < 0x20 && text[11] >= '0' && text[11] <= '7';
}

// The values of `key`, refusing a bare key (no value) and more than one.
std::optional<std::string> single_value(const std::vector<std::string>& options,
                                        std::string_view key, const std::string& context) {
  size_t count = 0;
  std::optional<std::string> value;
  for (const auto& option : options) {
    if (option_key(option) != key) continue;
    if (++count > 1) throw Error("{}: option {} is given more than once", context, key);
    if (option.size() <= key.size() + 1) {
      throw Error("{}: option {} needs a value", context, key);
    }
    value = option.substr(key.size() + 1);
  }
  return value;
}

}  // namespace

bool is_pmem_source(std::string_view source) {
  return source == kPmemScanSource ||
         source.substr(0, kPmemPciSourcePrefix.size()) == kPmemPciSourcePrefix;
}

PmemSource decode_pmem_source(std::string_view source) {
  if (source == kPmemScanSource) return {};
  if (source.substr(0, kPmemPciSourcePrefix.size()) == kPmemPciSourcePrefix) {
    std::string_view address = source.substr(kPmemPciSourcePrefix.size());
    if (!pci_address(address)) {
      throw Error(
          "storage source '{}': not a virtio-pmem PCI address (expected {}DDDD:BB:DD.F in "
          "lower-case hex, e.g. {}0000:00:10.0)",
          source, kPmemPciSourcePrefix, kPmemPciSourcePrefix);
    }
    return PmemSource{std::string(address)};
  }
  throw Error(
      "storage source '{}': a {} storage needs source {}<DDDD:BB:DD.F> or {} (pmemN follows "
      "PCI probe order, so a /dev/pmemN path is never trusted to name a layer)",
      source, kPmemDriver, kPmemPciSourcePrefix, kPmemScanSource);
}

std::string encode_pmem_source(const PmemSource& source) {
  std::string out = source.pci_address ? std::string(kPmemPciSourcePrefix) + *source.pci_address
                                       : std::string(kPmemScanSource);
  if (decode_pmem_source(out) != source) throw Error("pmem source {} does not read back", out);
  return out;
}

const char* dax_fallback_name(DaxFallback fallback) {
  return fallback == DaxFallback::Warn ? "warn" : "error";
}

std::vector<std::string> encode_dax_options(const DaxOptions& options) {
  std::vector<std::string> out{
      make_option(marker::kDax, "always"),
      make_option(marker::kDaxFallback, dax_fallback_name(options.fallback))};
  if (decode_dax_options(out, "DAX options") != options)
    throw Error("DAX options: {} do not read back", out.front());
  return out;
}

std::optional<DaxOptions> decode_dax_options(const std::vector<std::string>& options,
                                             const std::string& context) {
  auto dax = single_value(options, marker::kDax, context);
  auto fallback = single_value(options, marker::kDaxFallback, context);
  if (!dax) {
    if (fallback) {
      throw Error("{}: option {}={} without {}=always", context, marker::kDaxFallback, *fallback,
                  marker::kDax);
    }
    return std::nullopt;
  }
  if (*dax != "always") {
    throw Error("{}: option {}={} is refused: the only value is 'always'", context, marker::kDax,
                *dax);
  }
  DaxOptions out;
  if (fallback) {
    if (*fallback == "warn") {
      out.fallback = DaxFallback::Warn;
    } else if (*fallback != "error") {
      throw Error("{}: option {}={} is refused: 'error' or 'warn'", context, marker::kDaxFallback,
                  *fallback);
    }
  }
  return out;
}

}  // namespace evmdk::contract
