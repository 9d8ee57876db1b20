#include "layer_checks.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>

#include "evmdk/error.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host::verify_detail {

namespace fs = std::filesystem;

// A raw image compose assembled (disk.img): every gpt/flat disk of format raw, and a raw-mode
// one whose disk is not the layer itself (padded for pmem).
bool is_raw_image(const Layout& layout) {
  if (layout.format != "raw") return false;
  return layout.mode != "raw" || !layout.raw_image.is_null() ||
         (!layout.layers.empty() && layout.disk != layout.layers[0].path);
}

std::string descriptor_name(const Layout& layout, const std::string& layout_path) {
  if ((layout.mode == "raw" && !is_raw_image(layout)) || layout.disk.empty()) {
    return kDescriptorName;
  }
  std::string name = fs::path(layout.disk).filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw Error("verify: {} names the disk '{}', which is not a file name", layout_path,
                layout.disk);
  }
  return name;
}

std::optional<std::string> identity_change(const InputFile& file, const LayoutLayer& expected) {
  const FileIdentity& was = *expected.identity;
  FileIdentity now;
  if (expected.erofs) {
    try {
      ErofsInfo info = probe_layer(file, expected.path, ProbeOptions{.check_blkid = false});
      now = {info.device, info.inode, info.file_size, to_hex(info.identity)};
    } catch (const Error& error) {
      return fmt::format("it no longer probes as EROFS: {}", error.what());
    }
  } else {
    now = blob_identity(file, expected.path);
  }
  if (now.device != was.device || now.inode != was.inode) {
    return fmt::format("device:inode {}:{}, layout.json says {}:{}", now.device, now.inode,
                       was.device, was.inode);
  }
  if (now.size != was.size) return fmt::format("{} bytes, layout.json says {}", now.size, was.size);
  if (now.head_sha256 != was.head_sha256) {
    return fmt::format("its superblock digest is {}, layout.json says {}", now.head_sha256,
                       was.head_sha256);
  }
  return std::nullopt;
}

void check_layer_verity(VirtualDisk& disk, const LayoutLayer& expected, VerifiedLayer& layer,
                        unsigned threads, const std::optional<RawImageRef>& image,
                        const ProblemFn& problem) {
  layer.verity = "failed";
  const bool ok_so_far = layer.ok;
  layer.ok = false;  // until the checks below pass
  std::string bytes = disk.read(expected.verity_hash_disk_offset, kVeritySuperblockSize);
  VeritySuperblock sb;
  try {
    sb = parse_verity_superblock(
        std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), layer.name());
  } catch (const std::exception& error) {
    problem(fmt::format("{}: no dm-verity superblock at {}: {}", layer.name(),
                        where(expected.verity_hash_disk_offset), error.what()));
    return;
  }
  VerityTreeCheck check;
  try {
    check = image ? verity_check_tree_at(image->fd, image->path, layer.disk_offset,
                                         expected.verity_hash_disk_offset, sb, threads)
                  : verity_check_tree(expected.path, expected.verity_hash_offset, sb, threads);
  } catch (const std::exception& error) {
    problem(fmt::format("{}: dm-verity superblock at {}: {}", layer.name(),
                        where(expected.verity_hash_disk_offset), error.what()));
    return;
  }
  if (check.root_hash != expected.verity_root_hash) {
    problem(
        fmt::format("{}: dm-verity: its data{} hashes to root {}, but the guest is given {}; "
                    "reads of the changed blocks will fail with EIO",
                    layer.name(), image ? " in " + image->path : "", check.root_hash,
                    expected.verity_root_hash));
    return;
  }
  if (check.first_bad_tree_byte) {
    problem(fmt::format(
        "{}: dm-verity: the stored hash tree differs from its data at {}; reads that need "
        "that tree block will fail with EIO",
        layer.name(),
        image ? fmt::format("{} of {}", where(*check.first_bad_tree_byte), image->path)
              : fmt::format("byte {} of the file", *check.first_bad_tree_byte)));
    return;
  }
  layer.verity = "verified";
  layer.ok = ok_so_far;
}

std::vector<RawSource> raw_sources(const Layout& layout) {
  std::vector<RawSource> out;
  for (const auto& extent : layout.extents) {
    if (extent.path.empty() || extent.role == "zero") continue;
    RawSource source;
    source.disk_begin = extent.first_lba * kSector;
    source.disk_end = (extent.first_lba + extent.sectors) * kSector;
    source.path = extent.path;
    source.file_offset = extent.file_offset_sectors * kSector;
    source.layer = extent.layer_index;
    out.push_back(std::move(source));
  }
  return out;
}

void SourceCompare::consume(const std::byte* data, size_t size, uint64_t stream_offset) {
  if (inner_ != nullptr) inner_->consume(data, size, stream_offset);
  if (mismatch_) return;
  const uint64_t begin = disk_start_ + stream_offset;
  const uint64_t end = begin + size;
  for (const RawSource* source : sources_) {
    uint64_t from = std::max(begin, source->disk_begin);
    uint64_t to = std::min(end, source->disk_end);
    if (from >= to) continue;
    size_t length = static_cast<size_t>(to - from);
    // Per chunk, not kept: a disk may have hundreds of layer streams.
    std::unique_ptr<std::byte[]> buffer(new std::byte[length]);
    uint64_t file_at = source->file_offset + (from - source->disk_begin);
    size_t got = pread_full(source->fd, buffer.get(), length, file_at, source->path);
    // Past the file's end the image holds zeros (as the VMDK presents them).
    std::memset(buffer.get() + got, 0, length - got);
    const std::byte* mine = data + (from - begin);
    if (std::memcmp(mine, buffer.get(), length) == 0) continue;
    size_t at = static_cast<size_t>(std::mismatch(mine, mine + length, buffer.get()).first - mine);
    mismatch_ = Mismatch{from + at, file_at + at, source};
    return;
  }
}

}  // namespace evmdk::host::verify_detail
