// libFuzzer target for the DAX coverage walk (host/erofs/dax_coverage.h) and the inode and
// directory-block parsers under it (common/include/evmdk/ondisk/erofs_inode.h), on image bytes
// as given: in memory and through a file descriptor at an offset (as for a GPT partition).
// Any image must end in a coverage or an evmdk::Error, bounded, and what is accepted must add
// up.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/host/erofs/dax_coverage.h"
#include "evmdk/ondisk/erofs_inode.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace host = evmdk::host;
namespace ondisk = evmdk::ondisk;

void check_coverage(const host::DaxCoverage& c) {
  uint64_t files = 0, bytes = 0;
  for (const auto& n : c.by_layout) {
    files += n.files;
    bytes += n.bytes;
  }
  check(files == c.files, "every file has one layout");
  check(bytes == c.file_bytes, "layout bytes add up to the file bytes");
  check(c.dax.bytes <= c.file_bytes && c.dax.files <= c.files, "DAX serves at most every file");
  check(c.inline_tail.files <= c.by_layout[2].files, "inline tails are inline files");
  check(c.compressed.files == c.by_layout[1].files + c.by_layout[3].files,
        "compressed = layouts 1 and 3");
  check(c.block_size == host::kDaxBlockSize || c.dax.files == 0,
        "no DAX without 4 KiB blocks");
  double percent = c.dax_percent();
  check(percent >= 0.0 && percent <= 100.0, "a percentage");
  check(c.files <= c.inodes, "files are inodes");
  (void)host::to_json(c).dump();
  (void)host::dax_coverage_warning(c, "fuzz");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static evmdk::fuzz::MemFile file("dax_coverage_fuzzer");
  std::span<const uint8_t> image(data, size);
  host::DaxCoverageLimits limits;
  limits.max_inodes = 4096;
  limits.max_entries = 16384;
  limits.max_depth = 64;
  bool accepted = false;
  host::DaxCoverage in_memory;
  try {
    in_memory = host::dax_coverage_of_bytes(image, "fuzz", limits);
    check_coverage(in_memory);
    accepted = true;
  } catch (const evmdk::Error&) {}
  // The same bytes behind 4096 bytes of something else, read through a file descriptor.
  std::string padded(4096, '\x5a');
  padded.append(reinterpret_cast<const char*>(data), size);
  file.set(padded);
  try {
    auto through_fd = host::dax_coverage(file.fd(), 4096, size, "fuzz", limits);
    check(accepted, "the fd walk accepts what the memory walk accepts");
    check(through_fd.files == in_memory.files && through_fd.dax.bytes == in_memory.dax.bytes,
          "both walks agree");
  } catch (const evmdk::Error&) {
    check(!accepted, "the fd walk refuses what the memory walk refuses");
  }
  // The raw parsers on any bytes.
  try {
    auto inode = ondisk::parse_erofs_inode(image, "fuzz");
    check(inode.header_size() >= inode.inode_size(), "xattrs follow the inode");
  } catch (const evmdk::Error&) {}
  try {
    auto entries = ondisk::parse_erofs_dir_block(image.first(std::min<size_t>(size, 65536)), "fuzz");
    check(entries.size() * ondisk::erofs::kDirentSize <= size, "entries fit the block");
    for (const auto& e : entries) check(!e.name.empty() && e.name.size() < size, "names fit");
  } catch (const evmdk::Error&) {}
  return 0;
}
