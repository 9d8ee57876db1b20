#pragma once
// How much of an EROFS layer's file data a guest can read through DAX (virtio-pmem with
// `mount -o dax=always`). EROFS decides per inode, silently: only uncompressed files without
// an inlined tail, in an image of 4 KiB blocks, are served by DAX; every other file goes
// through the guest page cache (docs/inspect.md). The walk reads the directory tree from the
// root inode and classifies every regular file by its data layout (i_format), as dump.erofs
// reports it.
//
// Rules (per regular file, each inode counted once, so hard links count once):
//   block size != 4096                      -> no file is DAX-served ("4 KiB blocks")
//   flat_plain (0), chunk_based (4)         -> DAX
//   flat_inline (2), size % block size != 0 -> not DAX, the whole file ("-Enoinline_data")
//   flat_inline (2) without a tail          -> DAX
//   compressed_full (1), compressed_compact (3) -> not DAX ("no -z compression")
//
// The walk is bounded (inodes, directory entries, depth), detects directory cycles, checks all
// arithmetic, and requires every inode and every directory's data to lie inside the image: a
// hostile image gives an evmdk::Error naming the layer, never a hang or a crash. Directories it
// cannot read (compressed or chunk-based directories) are listed in `unreadable`, and what lies
// below them is not counted.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace evmdk::host {

inline constexpr uint32_t kDaxBlockSize = 4096;
// compose warns for a layer when less than this share of its file bytes is DAX-served.
inline constexpr double kDaxWarnPercent = 90.0;

struct DaxLayoutCount {
  uint64_t files = 0;
  uint64_t bytes = 0;
  bool operator==(const DaxLayoutCount&) const = default;
};

struct DaxCoverage {
  uint32_t block_size = 0;
  uint64_t inodes = 0;       // every inode reached (files, directories, others), once each
  uint64_t directories = 0;  // directories read
  uint64_t files = 0;        // regular files
  uint64_t file_bytes = 0;   // sum of their sizes
  // Regular files by data layout (index: 0..4, the i_format layout value). flat_inline counts
  // files with and without a tail; inline_tail below is the part with one.
  std::array<DaxLayoutCount, 5> by_layout{};
  DaxLayoutCount inline_tail;  // flat_inline files whose size is not a block multiple
  DaxLayoutCount compressed;   // layouts 1 and 3
  DaxLayoutCount dax;          // files (and their bytes) DAX serves
  // "/usr/share: cannot read (compressed directory)": what lies below was not counted.
  std::vector<std::string> unreadable;

  // Percentage of file_bytes DAX serves (100 for a layer without file bytes).
  double dax_percent() const;
  // Why DAX misses bytes, each with the mkfs.erofs option that fixes it, largest cause
  // first; empty when every byte is DAX-served.
  struct Cause {
    std::string cause;  // "inline_tail", "compressed", "block_size"
    uint64_t bytes = 0;
    uint64_t files = 0;
    std::string fix;  // "-Enoinline_data", "no -z compression", "4 KiB blocks"
  };
  std::vector<Cause> causes() const;
};

struct DaxCoverageLimits {
  uint64_t max_inodes = uint64_t{1} << 24;
  uint64_t max_entries = uint64_t{1} << 26;  // directory entries read, over the whole walk
  uint32_t max_depth = 4096;
};

// The coverage of the EROFS image of `size` bytes at byte `base` of `fd` (a layer file: base 0
// and its size; a GPT partition: its byte range). `name` names the layer in errors:
// "<name>: DAX coverage: inode 1234 of /etc/passwd lies outside the image (...)".
DaxCoverage dax_coverage(int fd, uint64_t base, uint64_t size, const std::string& name,
                         const DaxCoverageLimits& limits = {});
// The same over bytes in memory (the fuzzer).
DaxCoverage dax_coverage_of_bytes(std::span<const uint8_t> image, const std::string& name,
                                  const DaxCoverageLimits& limits = {});

// {"block_size", "files", "file_bytes", "dax_files", "dax_bytes", "dax_percent",
//  "by_layout": {"flat_plain": {"files", "bytes"}, ...}, "inline_tail", "compressed",
//  "causes": [{"cause", "files", "bytes", "fix"}], "unreadable": [...], "inodes", "directories",
//  "summary": dax_coverage_summary()}
nlohmann::json to_json(const DaxCoverage& coverage);

// One line for text output: "DAX serves 42.0% of 1048576 file bytes (3 of 5 files); not
// served: 600000 bytes with inlined tails (fix: mkfs.erofs -Enoinline_data)".
std::string dax_coverage_summary(const DaxCoverage& coverage);

// A warning naming `layer_name` and the fixes when under kDaxWarnPercent of the layer's file
// bytes are DAX-served (compose --attach pmem prints it); nullopt otherwise.
std::optional<std::string> dax_coverage_warning(const DaxCoverage& coverage,
                                                const std::string& layer_name);

}  // namespace evmdk::host
