#include "evmdk/host/compose/raw_output.h"

#include <fcntl.h>
#include <sys/statfs.h>

#include <filesystem>
#include <map>

#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kSector = 512;

bool is_data(const DiskExtent& extent) {
  return extent.role != "gpt-head" && extent.role != "gpt-tail" && extent.role != "zero";
}

std::string piece_name(const ComposeResult& result, const DiskExtent& extent) {
  size_t index = extent.layer_index.value_or(0);
  const std::string& path = index < result.layers.size() ? result.layers[index].path : extent.path;
  if (extent.role == "fsmeta") return fmt::format("fsmeta ({})", path);
  if (extent.role == "device") return fmt::format("device {} ({})", index, path);
  if (extent.role == "verity") return fmt::format("dm-verity area of input {} ({})", index, path);
  return fmt::format("layer {} ({})", index, path);
}

// The output directory, or its nearest existing parent: where the image will be created.
std::string existing_dir(const std::string& output_dir) {
  fs::path dir = fs::path(output_dir);
  while (!dir.empty() && !fs::is_directory(dir)) {
    if (dir == dir.parent_path()) break;
    dir = dir.parent_path();
  }
  return dir.empty() ? std::string(".") : dir.string();
}

}  // namespace

std::string to_string(DiskFormat format) {
  switch (format) {
    case DiskFormat::Vmdk: return "vmdk";
    case DiskFormat::Raw: return "raw";
    case DiskFormat::Auto: return "auto";
  }
  return "?";
}

DiskFormat parse_disk_format(const std::string& text, const std::string& option) {
  if (text == "vmdk") return DiskFormat::Vmdk;
  if (text == "raw") return DiskFormat::Raw;
  if (text == "auto") return DiskFormat::Auto;
  throw Error("{} '{}': expected vmdk, raw or auto", option, text);
}

std::string raw_sharing_problem(const ComposeResult& result, const std::string& output_dir) {
  std::string dir = existing_dir(output_dir);
  UniqueFd dir_fd = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  struct statfs sfs {};
  if (::fstatfs(dir_fd.get(), &sfs) != 0 || sfs.f_bsize <= 0) {
    return fmt::format("cannot read the block size of the filesystem of {}", dir);
  }
  uint64_t block = static_cast<uint64_t>(sfs.f_bsize);
  std::string where = fmt::format("{} ({})", dir, filesystem_name(dir_fd.get()));
  std::map<std::string, std::string> checked;  // path -> problem
  for (const auto& extent : result.extents) {
    if (!is_data(extent)) continue;
    std::string name = piece_name(result, extent);
    uint64_t disk = extent.first_lba * kSector;
    uint64_t source = extent.file_offset * kSector;
    if (disk % block != source % block) {
      return fmt::format(
          "{}: its disk offset {} and its file offset {} are not at the same place in a "
          "{}-byte block of {}, so no block of it can be shared",
          name, disk, source, block, where);
    }
    auto [it, inserted] = checked.try_emplace(extent.path);
    if (inserted) {
      InputFile file = open_input_file(extent.path, name);
      ReflinkSupport support = reflink_possible(file.fd.get(), dir_fd.get());
      if (!support.possible) it->second = support.reason;
    }
    if (!it->second.empty()) {
      return fmt::format("{}: its blocks cannot be shared into {}: {}", name, where, it->second);
    }
  }
  return "";
}

std::vector<RawPiece> raw_pieces_from_compose(const ComposeResult& result, const std::string& head,
                                              const std::string& tail) {
  std::vector<RawPiece> pieces;
  for (const auto& extent : result.extents) {
    RawPiece piece;
    piece.disk_offset = extent.first_lba * kSector;
    piece.length = extent.sectors * kSector;
    piece.source_offset = extent.file_offset * kSector;
    if (extent.role == "gpt-head" || extent.role == "gpt-tail") {
      piece.kind = RawPieceKind::Metadata;
      piece.name = extent.role;
      piece.contents = extent.role == "gpt-head" ? head : tail;
    } else if (extent.role == "zero") {
      piece.kind = RawPieceKind::Filler;
      piece.name = "zero filler";
    } else {
      piece.kind = RawPieceKind::Data;
      piece.name = piece_name(result, extent);
      piece.path = extent.path;
      if (extent.layer_index && *extent.layer_index < result.layers.size()) {
        piece.expected_size = result.layers[*extent.layer_index].info.file_size;
      }
    }
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

}  // namespace evmdk::host
