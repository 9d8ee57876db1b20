#include "evmdk/vmdk/extent_map.h"

#include <algorithm>

#include "evmdk/error.h"

namespace evmdk::vmdk {

void ExtentMap::add(MappedExtent extent) {
  extent.virtual_offset = virtual_size_;
  virtual_size_ += extent.length;
  extents_.push_back(std::move(extent));
}

ExtentMap ExtentMap::from_qemu_reading(const QemuReading& reading) {
  if (!reading.opens()) throw Error("QEMU would not open the descriptor: {}", reading.open_error);
  if (reading.size_overflows) throw Error("the descriptor's disk size overflows 64-bit bytes");
  ExtentMap map;
  for (const QemuExtent& extent : reading.extents) {
    if (extent.type != "FLAT" && extent.type != "VMFS") {
      throw Error("line {}: {} extents cannot be mapped, only FLAT", extent.last_line, extent.type);
    }
    map.add(MappedExtent{0, static_cast<uint64_t>(extent.sectors) * kSectorSize,
                         extent.resolved_path, static_cast<uint64_t>(extent.offset) * kSectorSize,
                         extent.last_line});
  }
  return map;
}

ExtentMap ExtentMap::from_descriptor(const Descriptor& descriptor) {
  total_sectors(descriptor);  // throws on overflow
  ExtentMap map;
  for (const FlatExtent& line : emitted_extents(descriptor)) {
    map.add(MappedExtent{0, line.sectors * kSectorSize, line.path, line.offset * kSectorSize, 0});
  }
  return map;
}

ExtentMap ExtentMap::from_file(const std::string& descriptor_path) {
  try {
    return from_qemu_reading(read_as_qemu(read_descriptor_bytes(descriptor_path), descriptor_path));
  } catch (const std::exception& error) {
    throw Error(with_context(descriptor_path, error));
  }
}

std::optional<MapLocation> ExtentMap::find(uint64_t virtual_offset) const {
  if (virtual_offset >= virtual_size_) return std::nullopt;
  // The last extent starting at or before the offset; zero-length extents never exist.
  auto it = std::upper_bound(
      extents_.begin(), extents_.end(), virtual_offset,
      [](uint64_t offset, const MappedExtent& extent) { return offset < extent.virtual_offset; });
  --it;
  uint64_t into = virtual_offset - it->virtual_offset;
  return MapLocation{static_cast<size_t>(it - extents_.begin()), &*it, it->file_offset + into,
                     it->length - into};
}

}  // namespace evmdk::vmdk
