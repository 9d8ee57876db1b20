// libFuzzer target for the raw-image pieces of a descriptor (issue 15): arbitrary descriptor
// bytes read as QEMU reads them, then turned into the pieces the assembler would fill. Whatever
// raw_pieces_from_descriptor accepts must tile the disk exactly as QEMU's extent map does:
// contiguous from byte 0, none empty, the same total size, every piece the bytes of the file
// the map names at that offset. Anything it refuses must be an evmdk::Error.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/host/compose/raw_image.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/parser.h"
#include "fuzz_support.h"

using evmdk::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr const char* kPath = "/fuzz/out/disk.vmdk";
  evmdk::vmdk::QemuReading reading = evmdk::vmdk::read_as_qemu(text, kPath);
  evmdk::vmdk::Descriptor descriptor;
  evmdk::vmdk::ExtentMap map;
  try {
    descriptor = evmdk::vmdk::to_descriptor(reading);
    map = evmdk::vmdk::ExtentMap::from_qemu_reading(reading);
  } catch (const evmdk::Error&) {
    return 0;
  }
  std::vector<evmdk::host::RawPiece> pieces;
  try {
    pieces = evmdk::host::raw_pieces_from_descriptor(descriptor, "/fuzz/out");
  } catch (const evmdk::Error&) {
    return 0;
  }
  uint64_t end = 0;
  for (const auto& piece : pieces) {
    check(piece.length > 0, "no empty piece");
    check(piece.disk_offset == end, "pieces are contiguous");
    end += piece.length;
    auto at = map.find(piece.disk_offset);
    check(at.has_value(), "every piece is inside the disk");
    check(at->file_offset == piece.source_offset, "the piece reads where QEMU reads");
    check(std::filesystem::path(at->extent->path).lexically_normal().string() == piece.path,
          "the piece reads the file QEMU reads");
    auto last = map.find(piece.disk_offset + piece.length - 1);
    check(last.has_value(), "every piece ends inside the disk");
  }
  check(end == map.virtual_size(), "pieces cover the disk");
  return 0;
}
