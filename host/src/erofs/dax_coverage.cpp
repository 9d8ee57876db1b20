// DAX coverage of an EROFS layer: a bounded walk of the directory tree (dax_coverage.h).
#include "evmdk/host/erofs/dax_coverage.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <unordered_set>

#include "evmdk/checked_math.h"
#include "evmdk/error.h"
#include "evmdk/ondisk/erofs.h"
#include "evmdk/ondisk/erofs_inode.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

namespace od = evmdk::ondisk;

// Reads `length` bytes at image offset `offset`, all inside the image, or throws.
using ReadFn = std::function<std::vector<uint8_t>(uint64_t offset, size_t length)>;

class Walker {
 public:
  Walker(uint64_t image_size, ReadFn read, const std::string& name, const DaxCoverageLimits& limits)
      : size_(image_size), read_(std::move(read)), name_(name), limits_(limits) {}

  DaxCoverage run() {
    if (size_ < od::erofs::kSuperblockOffset + od::erofs::kSuperblockSize) {
      fail("image of {} bytes, too small for an EROFS superblock", size_);
    }
    auto sb_bytes = read_(od::erofs::kSuperblockOffset, od::erofs::kSuperblockSize);
    const od::ErofsSuperblock sb = od::parse_erofs_superblock(sb_bytes, name_);
    if (sb.wide_addresses()) fail("48BIT images are not supported by the DAX coverage walk");
    const od::ErofsTreeRoot root = od::parse_erofs_tree_root(sb_bytes, name_);
    block_size_ = sb.block_size();
    multi_device_ = sb.has_device_table();
    meta_base_ = mul_checked<uint64_t>(root.meta_blkaddr, block_size_).value_or(UINT64_MAX);
    out_.block_size = block_size_;

    struct Pending {
      uint64_t nid;
      uint32_t depth;
      std::string path;
    };
    std::vector<Pending> stack{{root.root_nid, 0, "/"}};
    std::unordered_set<uint64_t> seen{root.root_nid};
    bool first = true;
    while (!stack.empty()) {
      Pending item = std::move(stack.back());
      stack.pop_back();
      const uint64_t inode_offset = inode_position(item.nid, item.path);
      od::ErofsInode inode = read_inode(inode_offset, item.nid, item.path);
      ++out_.inodes;
      if (first && !inode.is_directory()) fail("root inode (nid {}) is not a directory", item.nid);
      first = false;
      if (inode.is_regular()) {
        count_file(inode, inode_offset, item.path);
        continue;
      }
      if (!inode.is_directory()) continue;
      if (item.depth >= limits_.max_depth) {
        fail("{}: directories nested deeper than {}", item.path, limits_.max_depth);
      }
      for (auto& entry : read_directory(inode, inode_offset, item.nid, item.path)) {
        if (entry.name == "." || entry.name == "..") continue;
        std::string path = item.path == "/" ? "/" + entry.name : item.path + "/" + entry.name;
        if (!seen.insert(entry.nid).second) {
          if (entry.file_type == od::erofs::kFileTypeDirectory) {
            fail("{}: directory nid {} is reached twice (a directory cycle)", path, entry.nid);
          }
          continue;  // a hard link: counted once
        }
        if (seen.size() > limits_.max_inodes) fail("more than {} inodes", limits_.max_inodes);
        stack.push_back({entry.nid, item.depth + 1, std::move(path)});
      }
    }
    return out_;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    throw Error("{}: DAX coverage: {}", name_, fmt::format(format, std::forward<Args>(args)...));
  }

  // [offset, offset + length) inside the image, or fail naming `what`.
  void check_inside(uint64_t offset, uint64_t length, const std::string& what) const {
    auto end = add_checked(offset, length);
    if (!end || *end > size_) {
      fail("{} (bytes {}+{}) lies outside the image ({} bytes)", what, offset, length, size_);
    }
  }

  uint64_t inode_position(uint64_t nid, const std::string& path) const {
    auto rel = mul_checked<uint64_t>(nid, od::erofs::kInodeSlotSize);
    auto at = rel ? add_checked(meta_base_, *rel) : std::nullopt;
    if (!at || *at > size_) {
      fail("inode nid {} of {} lies outside the image ({} bytes)", nid, path, size_);
    }
    return *at;
  }

  od::ErofsInode read_inode(uint64_t offset, uint64_t nid, const std::string& path) const {
    const std::string what = fmt::format("inode nid {} of {}", nid, path);
    check_inside(offset, od::erofs::kCompactInodeSize, what);
    const uint64_t room = std::min<uint64_t>(size_ - offset, od::erofs::kExtendedInodeSize);
    auto bytes = read_(offset, static_cast<size_t>(room));
    auto inode = od::parse_erofs_inode(bytes, fmt::format("{}: {}", name_, what));
    check_inside(offset, inode.header_size(), what + " with its xattrs");
    return inode;
  }

  void count_file(const od::ErofsInode& inode, uint64_t inode_offset, const std::string& path) {
    ++out_.files;
    out_.file_bytes = add_or_throw(out_.file_bytes, inode.size, name_ + ": file bytes");
    if (inode.layout > od::erofs::kDataLayoutMax) {
      fail("{}: unknown data layout {}", path, inode.layout);
    }
    auto add = [&](DaxLayoutCount& count) {
      ++count.files;
      count.bytes += inode.size;  // <= file_bytes, which did not overflow
    };
    add(out_.by_layout[inode.layout]);
    const uint64_t tail = inode.size % block_size_;
    bool dax = false;
    switch (static_cast<od::erofs::DataLayout>(inode.layout)) {
      case od::erofs::DataLayout::kFlatPlain:
        check_flat_data(inode, inode.size, path);
        dax = true;
        break;
      case od::erofs::DataLayout::kChunkBased: dax = true; break;
      case od::erofs::DataLayout::kFlatInline:
        check_flat_data(inode, inode.size - tail, path);
        check_inside(inode_offset + inode.header_size(), tail, path + ": inline tail");
        if (tail != 0) add(out_.inline_tail);
        dax = tail == 0;
        break;
      case od::erofs::DataLayout::kCompressedFull:
      case od::erofs::DataLayout::kCompressedCompact: add(out_.compressed); break;
    }
    if (dax && block_size_ == kDaxBlockSize) add(out_.dax);
  }

  // The blocks of a flat file (`bytes` rounded up to blocks at raw_blkaddr) lie inside the
  // image; multi-device images may keep data on other devices, not checked there.
  void check_flat_data(const od::ErofsInode& inode, uint64_t bytes, const std::string& path) const {
    if (multi_device_ || bytes == 0) return;
    auto start = mul_checked<uint64_t>(inode.raw_blkaddr, block_size_);
    if (!start) fail("{}: data block {} overflows", path, inode.raw_blkaddr);
    check_inside(*start, bytes, fmt::format("{}: data of {} bytes", path, inode.size));
  }

  std::vector<od::ErofsDirent> read_directory(const od::ErofsInode& inode, uint64_t inode_offset,
                                              uint64_t nid, const std::string& path) {
    std::vector<od::ErofsDirent> entries;
    const auto layout = static_cast<od::erofs::DataLayout>(inode.layout);
    if (layout == od::erofs::DataLayout::kCompressedFull ||
        layout == od::erofs::DataLayout::kCompressedCompact) {
      out_.unreadable.push_back(path + ": cannot read (compressed directory)");
      return entries;
    }
    if (layout == od::erofs::DataLayout::kChunkBased) {
      out_.unreadable.push_back(path + ": cannot read (chunk-based directory)");
      return entries;
    }
    if (inode.layout > od::erofs::kDataLayoutMax) {
      fail("directory {} (nid {}): unknown data layout {}", path, nid, inode.layout);
    }
    ++out_.directories;
    const uint64_t tail =
        layout == od::erofs::DataLayout::kFlatInline ? inode.size % block_size_ : 0;
    const uint64_t block_bytes = inode.size - tail;
    auto start = mul_checked<uint64_t>(inode.raw_blkaddr, block_size_);
    if (block_bytes != 0) {
      if (!start) fail("directory {}: data block {} overflows", path, inode.raw_blkaddr);
      check_inside(*start, block_bytes,
                   fmt::format("directory {} (nid {}, {} bytes)", path, nid, inode.size));
    }
    const uint64_t tail_at = inode_offset + inode.header_size();
    if (tail != 0) {
      check_inside(tail_at, tail, fmt::format("inline data of directory {} (nid {})", path, nid));
    }
    auto parse = [&](uint64_t offset, uint64_t length, uint64_t index) {
      auto bytes = read_(offset, static_cast<size_t>(length));
      auto block = od::parse_erofs_dir_block(
          bytes, fmt::format("{}: directory {} block {}", name_, path, index));
      entries_read_ += block.size();
      if (entries_read_ > limits_.max_entries) {
        fail("more than {} directory entries", limits_.max_entries);
      }
      for (auto& e : block) entries.push_back(std::move(e));
    };
    uint64_t index = 0;
    for (uint64_t done = 0; done < block_bytes; done += block_size_, ++index) {
      const uint64_t length = std::min<uint64_t>(block_size_, block_bytes - done);
      parse(*start + done, length, index);
    }
    if (tail != 0) parse(tail_at, tail, index);
    return entries;
  }

  uint64_t size_;
  ReadFn read_;
  const std::string& name_;
  DaxCoverageLimits limits_;
  uint32_t block_size_ = 0;
  bool multi_device_ = false;
  uint64_t meta_base_ = 0;
  uint64_t entries_read_ = 0;
  DaxCoverage out_;
};

}  // namespace

double DaxCoverage::dax_percent() const {
  if (file_bytes == 0) return 100.0;
  return 100.0 * static_cast<double>(dax.bytes) / static_cast<double>(file_bytes);
}

std::vector<DaxCoverage::Cause> DaxCoverage::causes() const {
  std::vector<Cause> out;
  if (block_size != kDaxBlockSize) {
    if (file_bytes != 0) {
      out.push_back({"block_size", file_bytes, files, "4 KiB blocks (mkfs.erofs -b 4096)"});
    }
    return out;
  }
  if (inline_tail.bytes != 0) {
    out.push_back({"inline_tail", inline_tail.bytes, inline_tail.files, "-Enoinline_data"});
  }
  if (compressed.bytes != 0) {
    out.push_back({"compressed", compressed.bytes, compressed.files, "no -z compression"});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Cause& a, const Cause& b) { return a.bytes > b.bytes; });
  return out;
}

DaxCoverage dax_coverage(int fd, uint64_t base, uint64_t size, const std::string& name,
                         const DaxCoverageLimits& limits) {
  auto read = [&](uint64_t offset, size_t length) {
    std::vector<uint8_t> bytes(length);
    auto at = add_or_throw(base, offset, name + ": offset");
    if (pread_full(fd, bytes.data(), length, at, name) != length) {
      throw Error("{}: DAX coverage: truncated image: {} bytes at {} could not be read", name,
                  length, at);
    }
    return bytes;
  };
  return Walker(size, read, name, limits).run();
}

DaxCoverage dax_coverage_of_bytes(std::span<const uint8_t> image, const std::string& name,
                                  const DaxCoverageLimits& limits) {
  auto read = [&](uint64_t offset, size_t length) {
    // The walker checked [offset, offset + length) against the size already.
    return std::vector<uint8_t>(image.begin() + static_cast<ptrdiff_t>(offset),
                                image.begin() + static_cast<ptrdiff_t>(offset + length));
  };
  return Walker(image.size(), read, name, limits).run();
}

nlohmann::json to_json(const DaxCoverage& c) {
  auto count = [](const DaxLayoutCount& n) {
    return nlohmann::json{{"files", n.files}, {"bytes", n.bytes}};
  };
  nlohmann::json layouts = nlohmann::json::object();
  for (uint8_t i = 0; i < c.by_layout.size(); ++i) {
    layouts[ondisk::erofs_layout_name(i)] = count(c.by_layout[i]);
  }
  nlohmann::json causes = nlohmann::json::array();
  for (const auto& cause : c.causes()) {
    causes.push_back({{"cause", cause.cause},
                      {"files", cause.files},
                      {"bytes", cause.bytes},
                      {"fix", cause.fix}});
  }
  return {{"block_size", c.block_size},
          {"inodes", c.inodes},
          {"directories", c.directories},
          {"files", c.files},
          {"file_bytes", c.file_bytes},
          {"dax_files", c.dax.files},
          {"dax_bytes", c.dax.bytes},
          {"dax_percent", c.dax_percent()},
          {"by_layout", layouts},
          {"inline_tail", count(c.inline_tail)},
          {"compressed", count(c.compressed)},
          {"causes", causes},
          {"unreadable", c.unreadable},
          {"summary", dax_coverage_summary(c)}};
}

namespace {
std::string cause_text(const DaxCoverage::Cause& cause, uint32_t block_size) {
  if (cause.cause == "block_size") {
    return fmt::format("{} bytes in {}-byte blocks (fix: {})", cause.bytes, block_size, cause.fix);
  }
  if (cause.cause == "inline_tail") {
    return fmt::format("{} bytes in {} files with inlined tails (fix: mkfs.erofs {})", cause.bytes,
                       cause.files, cause.fix);
  }
  return fmt::format("{} bytes in {} compressed files (fix: {})", cause.bytes, cause.files,
                     cause.fix);
}
}  // namespace

std::string dax_coverage_summary(const DaxCoverage& c) {
  std::string line = fmt::format("DAX serves {:.1f}% of {} file bytes ({} of {} files)",
                                 c.dax_percent(), c.file_bytes, c.dax.files, c.files);
  auto causes = c.causes();
  for (size_t i = 0; i < causes.size(); ++i) {
    line += (i == 0 ? "; not served: " : ", ") + cause_text(causes[i], c.block_size);
  }
  if (!c.unreadable.empty()) {
    line += fmt::format("; not counted: {}", fmt::join(c.unreadable, ", "));
  }
  return line;
}

std::optional<std::string> dax_coverage_warning(const DaxCoverage& coverage,
                                                const std::string& layer_name) {
  if (coverage.dax_percent() >= kDaxWarnPercent && coverage.unreadable.empty()) return std::nullopt;
  std::vector<std::string> fixes;
  for (const auto& cause : coverage.causes())
    fixes.push_back(cause_text(cause, coverage.block_size));
  std::string text = fmt::format(
      "{}: DAX would serve {}{:.1f}% of its {} file bytes; the rest falls back to the guest "
      "page cache",
      layer_name, coverage.dax_percent() < kDaxWarnPercent ? "only " : "", coverage.dax_percent(),
      coverage.file_bytes);
  if (!fixes.empty()) text += ": " + fmt::format("{}", fmt::join(fixes, "; "));
  if (!coverage.unreadable.empty()) {
    text += fmt::format(" (not counted: {})", fmt::join(coverage.unreadable, ", "));
  }
  return text;
}

}  // namespace evmdk::host
