#pragma once
// Layers on virtio-pmem, as they travel from host to guest (docs/guest.md "Layers on
// virtio-pmem"): the storage driver (`nvdimm`, Kata's name), the two sources a pmem lower may
// have (a PCI address, or a bounded scan matching the expected PARTUUID / EROFS UUID: pmemN
// follows PCI probe order and virtio-pmem has no serial, so never /dev/pmemN by number), and
// the DAX markers (X-erofs-vmdk.dax=always, X-erofs-vmdk.dax-fallback=error|warn). ONE
// encoder (compose, the hook) and ONE decoder (the guest's plan).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::contract {

inline constexpr std::string_view kPmemDriver = "nvdimm";
inline constexpr std::string_view kPmemPciSourcePrefix = "pmem-pci:";  // + DDDD:BB:DD.F
inline constexpr std::string_view kPmemScanSource = "pmem-scan";

// Where the guest finds a pmem lower's device.
struct PmemSource {
  // The virtio-pmem PCI function "DDDD:BB:DD.F" (lower-case hex), or none: scan every
  // /sys/block/pmem* for the storage's PARTUUID (a partition) or EROFS UUID (a whole device).
  std::optional<std::string> pci_address;
  bool operator==(const PmemSource&) const = default;
};

// Whether `source` has one of the pmem forms (it may still be malformed).
bool is_pmem_source(std::string_view source);
// "pmem-pci:<address>" or "pmem-scan"; throws evmdk::Error naming the source when it is
// neither, or the address is not DDDD:BB:DD.F with a function 0-7.
PmemSource decode_pmem_source(std::string_view source);
std::string encode_pmem_source(const PmemSource& source);  // checked with the decoder

// What a storage asks of DAX.
enum class DaxFallback { Error, Warn };
struct DaxOptions {
  DaxFallback fallback = DaxFallback::Error;
  bool operator==(const DaxOptions&) const = default;
};

// X-erofs-vmdk.dax=always, then X-erofs-vmdk.dax-fallback=<error|warn>.
std::vector<std::string> encode_dax_options(const DaxOptions& options);
// nullopt when the options ask for no DAX. Throws evmdk::Error naming `context` and the option
// for any other value, a repeated marker, or a dax-fallback without dax=always.
std::optional<DaxOptions> decode_dax_options(const std::vector<std::string>& options,
                                             const std::string& context);
const char* dax_fallback_name(DaxFallback fallback);

}  // namespace evmdk::contract
