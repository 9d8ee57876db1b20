#pragma once
// The disk layout as QEMU sees it: virtual byte offset -> (file, file offset), O(log n).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/parser.h"

namespace evmdk::vmdk {

struct MappedExtent {
  uint64_t virtual_offset = 0;  // bytes into the virtual disk
  uint64_t length = 0;          // bytes
  std::string path;             // the file QEMU opens (relative names already resolved)
  uint64_t file_offset = 0;     // bytes into that file
  size_t line = 0;              // descriptor line (0 when built from a Descriptor)

  bool operator==(const MappedExtent&) const = default;
};

struct MapLocation {
  size_t index = 0;  // into ExtentMap::extents()
  const MappedExtent* extent = nullptr;
  uint64_t file_offset = 0;  // bytes into extent->path for the looked-up virtual offset
  uint64_t bytes_left = 0;   // bytes until the end of this extent
};

class ExtentMap {
 public:
  ExtentMap() = default;
  // From QEMU's reading of a descriptor; throws evmdk::Error if QEMU would not open it.
  static ExtentMap from_qemu_reading(const QemuReading& reading);
  // From the writer's model: the extent lines render() emits.
  static ExtentMap from_descriptor(const Descriptor& descriptor);
  // Reads and parses a descriptor file as QEMU would.
  static ExtentMap from_file(const std::string& descriptor_path);

  // nullopt at or past the end of the disk.
  std::optional<MapLocation> find(uint64_t virtual_offset) const;
  uint64_t virtual_size() const { return virtual_size_; }
  const std::vector<MappedExtent>& extents() const { return extents_; }

 private:
  void add(MappedExtent extent);
  std::vector<MappedExtent> extents_;
  uint64_t virtual_size_ = 0;
};

}  // namespace evmdk::vmdk
