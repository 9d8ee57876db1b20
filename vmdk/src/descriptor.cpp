#include "evmdk/vmdk/descriptor.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <limits>

#include "evmdk/atomic_file.h"
#include "evmdk/checksum.h"
#include "evmdk/error.h"

namespace evmdk::vmdk {
namespace {

// QEMU keeps sectors and offsets as int64 and turns offsets into bytes with `<< 9`, so every
// sector count, every offset and the disk size must stay below INT64_MAX / 512 sectors.
constexpr uint64_t kMaxSectorValue =
    static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / kSectorSize;

constexpr std::array<std::string_view, 4> kAdapterTypes = {"ide", "buslogic", "lsilogic",
                                                           "legacyESX"};

std::string describe(size_t index, const FlatExtent& extent) {
  // The path may hold control characters; fmt's debug format escapes them.
  return fmt::format("extent {} (path {:?})", index, extent.path);
}

void check_extent(size_t index, const FlatExtent& extent) {
  if (extent.path.empty()) throw Error("{}: empty path", describe(index, extent));
  for (char c : extent.path) {
    if (c == '"' || c == '\r' || c == '\n' || c == '\0') {
      throw Error("{}: path contains {:?}, which QEMU cannot read in an extent name",
                  describe(index, extent), c);
    }
  }
  if (extent.path.size() > kQemuMaxPathBytes) {
    throw Error("{}: path is {} bytes, QEMU reads at most {}", describe(index, extent),
                extent.path.size(), kQemuMaxPathBytes);
  }
  if (extent.path.front() != '/') {
    throw Error(
        "{}: path is relative; QEMU resolves it against the descriptor path as given, "
        "so only absolute paths are written",
        describe(index, extent));
  }
  // QEMU searches the whole descriptor head for this substring and opens what follows as a
  // backing file, even inside an extent name.
  if (extent.path.find("parentFileNameHint") != std::string::npos) {
    throw Error(
        "{}: path contains \"parentFileNameHint\", which QEMU would take as a backing "
        "file",
        describe(index, extent));
  }
  if (extent.sectors == 0) {
    throw Error("{}: sector count must be positive", describe(index, extent));
  }
  if (extent.sectors > kMaxSectorValue || extent.offset > kMaxSectorValue ||
      extent.offset + extent.sectors > kMaxSectorValue) {
    throw Error("{}: {} sectors at offset {} overflow QEMU's 64-bit byte arithmetic",
                describe(index, extent), extent.sectors, extent.offset);
  }
}

}  // namespace

std::string_view create_type_name(CreateType type) {
  switch (type) {
    case CreateType::MonolithicFlat: return "monolithicFlat";
    case CreateType::TwoGbMaxExtentFlat: return "twoGbMaxExtentFlat";
  }
  throw Error("unknown VMDK create type {}", static_cast<int>(type));
}

uint64_t total_sectors(const Descriptor& descriptor) {
  uint64_t total = 0;
  for (size_t i = 0; i < descriptor.extents.size(); ++i) {
    const FlatExtent& extent = descriptor.extents[i];
    if (extent.sectors > kMaxSectorValue || total > kMaxSectorValue - extent.sectors) {
      throw Error("{}: the disk size overflows QEMU's 64-bit byte arithmetic at this extent",
                  describe(i, extent));
    }
    total += extent.sectors;
  }
  return total;
}

std::vector<FlatExtent> emitted_extents(const Descriptor& descriptor) {
  // Count before splitting: a huge extent would otherwise become billions of lines. Any
  // descriptor with more lines than this is over QEMU's 1 MiB anyway.
  constexpr uint64_t kLineCap = 1 << 16;
  uint64_t line_count = 0;
  for (size_t i = 0; i < descriptor.extents.size(); ++i) {
    const FlatExtent& extent = descriptor.extents[i];
    check_extent(i, extent);
    line_count += descriptor.create_type == CreateType::MonolithicFlat
                      ? 1
                      : (extent.sectors + kTwoGbExtentSectors - 1) / kTwoGbExtentSectors;
    if (line_count > kLineCap) {
      throw Error("{}: the descriptor would need more than {} extent lines", describe(i, extent),
                  kLineCap);
    }
  }
  std::vector<FlatExtent> lines;
  lines.reserve(line_count);
  for (const FlatExtent& extent : descriptor.extents) {
    if (descriptor.create_type == CreateType::MonolithicFlat) {
      lines.push_back(extent);
      continue;
    }
    for (uint64_t done = 0; done < extent.sectors; done += kTwoGbExtentSectors) {
      lines.push_back(FlatExtent{extent.path, std::min(kTwoGbExtentSectors, extent.sectors - done),
                                 extent.offset + done});
    }
  }
  return lines;
}

std::string render(const Descriptor& descriptor) {
  if (descriptor.extents.empty()) {
    throw Error("VMDK descriptor has no extents; QEMU would open an empty disk");
  }
  bool known_adapter = false;
  for (auto adapter : kAdapterTypes) known_adapter |= adapter == descriptor.adapter_type;
  if (!known_adapter) {
    throw Error("unsupported VMDK adapter type {:?} (use ide, buslogic, lsilogic or legacyESX)",
                descriptor.adapter_type);
  }
  const uint64_t total = total_sectors(descriptor);
  const std::vector<FlatExtent> lines = emitted_extents(descriptor);

  // Everything after the CID line; the CID is a checksum of it, so equal input gives equal
  // bytes and different extents give (almost always) a different CID.
  std::string tail = "parentCID=ffffffff\n";
  tail += fmt::format("createType=\"{}\"\n", create_type_name(descriptor.create_type));
  tail += "\n# Extent description\n";
  for (const FlatExtent& line : lines) {
    tail += fmt::format("RW {} FLAT \"{}\" {}\n", line.sectors, line.path, line.offset);
  }
  tail += "\n# The Disk Data Base\n#DDB\n\n";
  tail += "ddb.virtualHWVersion = \"4\"\n";
  constexpr uint64_t kCylinderSectors = 63 * 16;
  tail += fmt::format("ddb.geometry.cylinders = \"{}\"\n",
                      (total + kCylinderSectors - 1) / kCylinderSectors);
  tail += "ddb.geometry.heads = \"16\"\n";
  tail += "ddb.geometry.sectors = \"63\"\n";
  tail += fmt::format("ddb.adapterType = \"{}\"\n", descriptor.adapter_type);

  const uint32_t cid = crc32_ieee(tail.data(), tail.size());
  std::string text = fmt::format("# Disk DescriptorFile\nversion=1\nCID={:08x}\n", cid);
  const size_t cid_line = text.find("CID=");
  text += tail;

  if (text.size() > kQemuMaxDescriptorBytes) {
    throw Error("VMDK descriptor would be {} bytes; QEMU silently ignores everything after {}",
                text.size(), kQemuMaxDescriptorBytes);
  }
  if (lines.size() > kMaxExtentLines) {
    throw Error(
        "VMDK descriptor would have {} extent lines; QEMU opens one fd per line and the "
        "limit here is {}",
        lines.size(), kMaxExtentLines);
  }
  // By construction the header comes first; check anyway, because QEMU takes the first
  // occurrence of each key anywhere in the text.
  if (text.find("CID") != cid_line || text.find("parentCID") != text.find("parentCID=ffffffff") ||
      text.find("createType") != text.find("createType=\"")) {
    throw Error("VMDK descriptor header keys are not the first occurrences of their names");
  }
  return text;
}

void write_descriptor_file(const std::string& path, const Descriptor& descriptor) {
  std::string text;
  try {
    text = render(descriptor);
  } catch (const std::exception& error) {
    throw Error(with_context(fmt::format("cannot write VMDK descriptor {}", path), error));
  }
  write_file_atomic(path, text);
}

}  // namespace evmdk::vmdk
