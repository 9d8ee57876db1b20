#pragma once
// A composed disk made ready for virtio-pmem, the way issue 18's phase B will have compose do
// it, from tools that exist today: `qemu-img convert -f vmdk -O raw` of the composed VMDK (the
// same bytes the raw-image assembler of issue 15 writes), padded to a multiple of 2 MiB (the
// guest's nd_pmem maps devices in 2 MiB sections and refuses anything else), and the backup GPT
// moved to the new end with `sgdisk -e` (padding alone leaves the backup header 1-2 MiB short of
// the end: `sgdisk -v` then reports "The secondary header's self-pointer indicates that it
// doesn't reside at the end of the disk"). Used by the pmem QEMU scenario and bench/.
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "process.h"

namespace evmdk::qemu {

inline constexpr uint64_t kPmemAlignment = 2u << 20;  // nd_pmem maps in 2 MiB sections

inline uint64_t round_up_to_pmem_alignment(uint64_t size) {
  return (size + kPmemAlignment - 1) / kPmemAlignment * kPmemAlignment;
}

// Deterministic incompressible bytes (xorshift64 from `seed`), written in 1 MiB pieces: a file
// mkfs.erofs stores plain, so DAX can serve it (the pmem scenarios and the two-VM benchmark).
inline void write_noise_file(const std::filesystem::path& path, uint64_t size, uint32_t seed) {
  constexpr uint64_t kPiece = 1u << 20;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
  std::string chunk(kPiece, '\0');
  for (uint64_t done = 0; done < size;) {
    uint64_t n = std::min<uint64_t>(chunk.size(), size - done);
    for (uint64_t i = 0; i < n; i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      for (uint64_t b = 0; b < 8 && i + b < n; ++b) chunk[i + b] = static_cast<char>(x >> (8 * b));
    }
    out.write(chunk.data(), static_cast<std::streamsize>(n));
    done += n;
  }
  if (!out.flush()) throw HarnessError("cannot write " + path.string());
}

struct PmemRawDisk {
  std::filesystem::path image;
  uint64_t unpadded_size = 0;  // bytes qemu-img convert wrote (what the VMDK presents)
  uint64_t size = 0;           // after padding: a multiple of 2 MiB
  std::string sgdisk_verify;   // `sgdisk -v` of the result ("No problems found" when right)
};

// Writes `image` from the composed VMDK: raw bytes, padded, backup GPT at the new end. Throws
// HarnessError naming the step that failed.
inline PmemRawDisk make_pmem_raw_disk(const std::filesystem::path& vmdk,
                                      const std::filesystem::path& image,
                                      const std::filesystem::path& scratch) {
  namespace fs = std::filesystem;
  auto step = [&](const std::vector<std::string>& argv) {
    auto result = run_command(argv, scratch, std::chrono::seconds(300));
    if (result.status != 0) {
      std::string line;
      for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
      throw HarnessError(line + " failed (status " + std::to_string(result.status) +
                         "): " + result.output);
    }
    return result.output;
  };
  step({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk.string(), image.string()});
  PmemRawDisk disk;
  disk.image = image;
  disk.unpadded_size = fs::file_size(image);
  disk.size = round_up_to_pmem_alignment(disk.unpadded_size);
  fs::resize_file(image, disk.size);  // zeros: the end of a GPT disk is free space anyway
  if (disk.size != disk.unpadded_size) step({"sgdisk", "-e", image.string()});
  disk.sgdisk_verify = step({"sgdisk", "-v", image.string()});
  if (disk.sgdisk_verify.find("No problems found") == std::string::npos) {
    throw HarnessError("sgdisk -v " + image.string() + " after padding: " + disk.sgdisk_verify);
  }
  return disk;
}

}  // namespace evmdk::qemu
