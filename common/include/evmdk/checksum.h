#pragma once
// Checksums used by on-disk formats: CRC32C (EROFS superblock) and CRC32 (GPT, via zlib).
#include <cstddef>
#include <cstdint>

namespace evmdk {

// Raw CRC32C (Castagnoli, reflected) update with no pre/post inversion: pass ~0u as the
// initial value and do not invert the result for EROFS's superblock checksum.
uint32_t crc32c_update(uint32_t crc, const void* data, size_t size);

// Standard CRC-32 (IEEE, as GPT and zlib use it), initial value 0.
uint32_t crc32_ieee(const void* data, size_t size);

}  // namespace evmdk
