#pragma once
// Internal to verify: the composed disk as the guest reads it. The descriptor read the way QEMU
// reads it (fdsets resolved through qemu.json), random access through its extent map, the GPT
// areas as raw bytes (so damage is pinned to a partition), and small bounded input files.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/verify/verify_reader.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/extent_map.h"

namespace evmdk::host::verify_detail {

inline constexpr uint64_t kSector = 512;

// "disk offset N (LBA M)": how every message places a problem.
std::string where(uint64_t disk_offset);
std::string lower(std::string text);

// layout.json decides which files verify (as root) reads, so it counts only when nobody but the
// caller (or root) could have written it: throws evmdk::Error naming the file otherwise.
void refuse_untrusted_layout(const std::string& layout_path);

// Reads a small input file (layout, qemu.json, expect file) without blocking on a FIFO or
// reading a device, and never more than 64 MiB.
std::string read_text(const std::string& path, const std::string& what);

// The descriptor's extent map as QEMU builds it; /dev/fdset/N extents are mapped to the files
// the qemu.json beside the descriptor lists. Throws evmdk::Error naming the descriptor.
vmdk::ExtentMap read_descriptor_map(const std::string& descriptor);

// Random access to the virtual disk through the extent map, for the small structural reads
// (superblocks, GPT): pread on each extent file, zeros past a file's end as QEMU presents them.
class VirtualDisk {
 public:
  explicit VirtualDisk(const vmdk::ExtentMap& map) : map_(map) {}

  std::string read(uint64_t offset, uint64_t length);

  int fd_for(const std::string& path) { return file_for(path).fd.get(); }
  // Every extent file is opened once, without blocking, and only if it is a regular file.
  const InputFile& file_for(const std::string& path);
  // A file the caller opened itself (a raw image, opened without following a symlink).
  void adopt(const std::string& path, InputFile file);

  // The file and offset backing `offset`, and how many bytes from there map contiguously into
  // that same file (following extent splits).
  struct Run {
    std::string path;
    uint64_t file_offset = 0;
    uint64_t length = 0;
  };
  std::optional<Run> contiguous_run(uint64_t offset, uint64_t limit) const;

  // The ranges of files that present disk bytes [offset, offset + length).
  std::vector<ReadSegment> segments(uint64_t offset, uint64_t length) const;

 private:
  const vmdk::ExtentMap& map_;
  std::map<std::string, InputFile> files_;
};

// A raw GPT entry as it sits on the disk, without trusting any CRC, so a damaged entry can be
// pinned to its partition (and so to its layer).
struct RawEntry {
  gpt::Guid type{};
  gpt::Guid unique{};
  uint64_t first_lba = 0;
  uint64_t last_lba = 0;
  bool used() const { return type != gpt::Guid{}; }
  bool operator==(const RawEntry&) const = default;
};

struct RawGpt {
  bool present = false;
  uint64_t entries_lba = 0;
  uint32_t entry_count = 0;
  uint32_t entry_size = 0;
  uint64_t alternate_lba = 0;
  std::vector<RawEntry> entries;
};

RawGpt read_raw_gpt(VirtualDisk& disk, uint64_t header_lba);

// Copies the GPT areas of the virtual disk into a sparse memfd of the same size, so the host
// library's strict GPT reader (which wants a raw image fd) validates exactly the guest's view.
UniqueFd gpt_image(VirtualDisk& disk, uint64_t disk_bytes);

}  // namespace evmdk::host::verify_detail
