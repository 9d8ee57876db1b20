#pragma once
// The flat VMDK descriptor model and the QEMU-safe writer.
// See vmdk/README.md: every QEMU trap listed there is refused by render().
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::vmdk {

inline constexpr uint64_t kSectorSize = 512;
// twoGbMaxExtentFlat splits extents at 2 GiB.
inline constexpr uint64_t kTwoGbExtentSectors = 4194304;
// QEMU reads at most this many descriptor bytes and silently ignores the rest.
inline constexpr uint64_t kQemuMaxDescriptorBytes = 1048575;
// QEMU looks for CID=/parentCID=/parentFileNameHint only in the first 10,240 bytes (the last
// byte of that window is overwritten with a NUL, so 10,239 bytes are searched).
inline constexpr uint64_t kQemuCidWindowBytes = 10240;
// QEMU reads at most 511 bytes of an extent file name.
inline constexpr uint64_t kQemuMaxPathBytes = 511;
// Each extent line costs QEMU one open fd; the default soft limit is 1024. The writer refuses
// more extent lines than this and the linter warns above it.
inline constexpr uint64_t kMaxExtentLines = 768;
// VirtualBox refuses descriptors with more lines than this.
inline constexpr uint64_t kVirtualBoxMaxLines = 1100;

enum class CreateType { MonolithicFlat, TwoGbMaxExtentFlat };

// "monolithicFlat" / "twoGbMaxExtentFlat".
std::string_view create_type_name(CreateType type);

// One FLAT extent: `sectors` 512-byte sectors of `path`, starting `offset` sectors into it.
struct FlatExtent {
  std::string path;  // absolute path (or /dev/fdset/N for fd passing)
  uint64_t sectors = 0;
  uint64_t offset = 0;

  bool operator==(const FlatExtent&) const = default;
};

struct Descriptor {
  CreateType create_type = CreateType::TwoGbMaxExtentFlat;
  std::vector<FlatExtent> extents;  // in virtual-disk order
  std::string adapter_type = "ide";

  bool operator==(const Descriptor&) const = default;
};

// Sum of the extents' sectors. Throws evmdk::Error if the sum overflows.
uint64_t total_sectors(const Descriptor& descriptor);

// The extent lines render() emits: for twoGbMaxExtentFlat every extent split into pieces of at
// most kTwoGbExtentSectors with rising offsets; monolithicFlat extents unchanged.
std::vector<FlatExtent> emitted_extents(const Descriptor& descriptor);

// Renders the well-known template byte for byte: all extents RW FLAT, no blank line before an
// extent, extents split at 2 GiB for twoGbMaxExtentFlat, CID derived from the content (same
// input, same bytes). Throws evmdk::Error naming the extent (index and path) for anything QEMU
// would misread: '"', CR, LF or NUL in a path, a path over 511 bytes, zero sectors, overflowing
// sector arithmetic, a result over 1 MiB, a "CID" substring before the CID line.
std::string render(const Descriptor& descriptor);

// render() then write atomically (temp file, fsync, rename, fsync of the directory).
void write_descriptor_file(const std::string& path, const Descriptor& descriptor);

}  // namespace evmdk::vmdk
