#include "evmdk/host/compose/raw_image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <vector>

#include "evmdk/checked_math.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/parser.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using vmdk::kSectorSize;

// compose's own files in its output directory (compose.h: kGptHeadName, kGptTailName,
// kZeroName); a descriptor names them by path, and only the directory says they are compose's.
constexpr const char* kHeadFile = "gpt-head.img";
constexpr const char* kTailFile = "gpt-tail.img";
constexpr const char* kFillerFile = "zero.img";

constexpr uint64_t kCopyChunk = uint64_t{1} << 20;
// One FICLONERANGE or copy_file_range call covers at most this much, so no single call holds
// the filesystem's locks for long.
constexpr uint64_t kCallChunk = uint64_t{1} << 30;

uint64_t align_down(uint64_t value, uint64_t alignment) { return value / alignment * alignment; }

std::string device_text(dev_t device) { return fmt::format("{}:{}", major(device), minor(device)); }

// Who a source is, as far as sharing its blocks safely needs: the same inode, size and
// modification time from the first look to the last.
struct SourceState {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  struct timespec mtime {};

  static SourceState of(const struct stat& st) {
    return {st.st_dev, st.st_ino, st.st_size, st.st_mtim};
  }
  bool same_as(const SourceState& other) const {
    return device == other.device && inode == other.inode && size == other.size &&
           mtime.tv_sec == other.mtime.tv_sec && mtime.tv_nsec == other.mtime.tv_nsec;
  }
};

// A piece in messages: its name, plus the file actually opened when the name does not say it.
std::string who(const RawPiece& piece, const InputFile& file) {
  if (piece.name.find(file.resolved_path) != std::string::npos) return piece.name;
  return fmt::format("{} ({})", piece.name, file.resolved_path);
}

// Why a FICLONERANGE refusal means "these blocks cannot be shared here" (as opposed to an I/O
// or permission failure, which is an error whatever the policy); nullopt for the latter.
std::optional<std::string> refusal_reason(int error_number, int source_fd, int image_fd) {
  switch (error_number) {
    case EXDEV: {
      struct stat source {
      }, image{};
      (void)::fstat(source_fd, &source);
      (void)::fstat(image_fd, &image);
      return fmt::format(
          "it is on a different filesystem ({}, device {}) than the image ({}, "
          "device {}); blocks are shared only within one filesystem",
          filesystem_name(source_fd), device_text(source.st_dev), filesystem_name(image_fd),
          device_text(image.st_dev));
    }
    case EOPNOTSUPP:
    case ENOTTY:
    case ENOSYS:
    case EINVAL:
      return fmt::format(
          "the image's filesystem ({}) does not support reflinks (FICLONERANGE: "
          "{}; XFS needs mkfs.xfs -m reflink=1, btrfs always has them)",
          filesystem_name(image_fd), std::strerror(error_number));
    default: return std::nullopt;
  }
}

class Assembler {
 public:
  Assembler(int image_fd, std::string image_name, const RawImageOptions& options)
      : image_fd_(image_fd), image_name_(std::move(image_name)), options_(options) {}

  RawImageReport run(const std::vector<RawPiece>& pieces) {
    uint64_t disk_size = check_tiling(pieces);
    struct stat st {};
    if (::fstat(image_fd_, &st) != 0) throw_errno("image {}: cannot stat", image_name_);
    if (!S_ISREG(st.st_mode) || st.st_size != 0) {
      throw Error("image {}: must be an empty regular file (it is a {} of {} bytes)", image_name_,
                  file_type_name(st.st_mode), st.st_size);
    }
    struct statfs sfs {};
    if (::fstatfs(image_fd_, &sfs) != 0 || sfs.f_bsize <= 0) {
      throw_errno("image {}: cannot read its filesystem's block size", image_name_);
    }
    report_.path = image_name_;
    report_.size = disk_size;
    report_.block_size = static_cast<uint64_t>(sfs.f_bsize);
    report_.filesystem = filesystem_name(image_fd_);
    // Every byte starts as a hole; pieces then write or share only what is not zero.
    if (::ftruncate(image_fd_, static_cast<off_t>(disk_size)) != 0) {
      throw_errno("image {}: cannot size it to {} bytes", image_name_, disk_size);
    }
    buffer_.resize(kCopyChunk);
    for (size_t i = 0; i < pieces.size(); ++i) assemble(i, pieces[i]);
    if (::fsync(image_fd_) != 0) throw_errno("image {}: cannot fsync", image_name_);
    for (const auto& piece : report_.pieces) {
      report_.shared_bytes += piece.shared_bytes;
      report_.copied_bytes += piece.copied_bytes;
      report_.hole_bytes += piece.hole_bytes;
    }
    return std::move(report_);
  }

 private:
  // Sorted, contiguous from 0, none empty; returns the disk size.
  uint64_t check_tiling(const std::vector<RawPiece>& pieces) const {
    if (pieces.empty()) throw Error("image {}: no pieces: the disk would be empty", image_name_);
    uint64_t end = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const RawPiece& piece = pieces[i];
      std::string what = fmt::format("piece {} ({})", i, piece.name);
      if (piece.length == 0) throw Error("{}: is empty", what);
      if (piece.disk_offset != end) {
        throw Error(
            "{}: starts at disk byte {} but the pieces before it end at {} (pieces must "
            "tile the disk in order)",
            what, piece.disk_offset, end);
      }
      end = add_or_throw(piece.disk_offset, piece.length, what + ": disk range");
      (void)add_or_throw(piece.source_offset, piece.length, what + ": file range");
    }
    if (end > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
      throw Error("image {}: {} bytes is more than a file can hold", image_name_, end);
    }
    return end;
  }

  InputFile open_source(const RawPiece& piece) {
    InputFile file = open_input_file(piece.path, piece.name);
    SourceState state = SourceState::of(file.st);
    if (piece.expected_size && *piece.expected_size != static_cast<uint64_t>(state.size)) {
      throw Error(
          "{}: is {} bytes but was {} when the disk was composed: not the file the "
          "disk was made of",
          who(piece, file), state.size, *piece.expected_size);
    }
    auto [it, inserted] = seen_.try_emplace(piece.path, state);
    if (!inserted && !it->second.same_as(state)) {
      throw Error("{}: changed between two of its pieces (inode, size or modification time)",
                  who(piece, file));
    }
    return file;
  }

  void check_unchanged(const InputFile& file, const RawPiece& piece, const char* when) const {
    struct stat now {};
    if (::fstat(file.fd.get(), &now) != 0) {
      throw_errno("{}: cannot stat", who(piece, file));
    }
    if (!SourceState::of(now).same_as(SourceState::of(file.st))) {
      throw Error(
          "{}: changed {} (size {} -> {} or its modification time): the image would "
          "not be the disk composed",
          who(piece, file), when, file.st.st_size, now.st_size);
    }
  }

  void assemble(size_t index, const RawPiece& piece) {
    RawPieceReport out;
    out.index = index;
    out.kind = piece.kind;
    out.name = piece.name;
    out.disk_offset = piece.disk_offset;
    out.length = piece.length;
    out.source_offset = piece.source_offset;
    if (piece.path.empty()) {
      assemble_inline(piece, out);
      report_.pieces.push_back(std::move(out));
      return;
    }
    InputFile file = open_source(piece);
    out.path = file.resolved_path;
    uint64_t size = static_cast<uint64_t>(file.st.st_size);
    // Bytes past the file's end read as zeros through the VMDK: they stay holes here.
    uint64_t present =
        size > piece.source_offset ? std::min(piece.length, size - piece.source_offset) : 0;
    if (present > 0) {
      if (piece.kind == RawPieceKind::Data) {
        assemble_data(file, piece, present, out);
      } else {
        copy_nonzero(file, piece, piece.source_offset, piece.disk_offset, present, out);
        if (piece.kind == RawPieceKind::Filler && out.copied_bytes > 0) {
          out.copy_reason = fmt::format("the filler holds {} non-zero bytes", out.copied_bytes);
        }
      }
    }
    check_unchanged(file, piece, "while the image was assembled");
    out.hole_bytes = piece.length - out.shared_bytes - out.copied_bytes;
    report_.pieces.push_back(std::move(out));
  }

  // Compose's own bytes (no file): only their non-zero blocks are written.
  void assemble_inline(const RawPiece& piece, RawPieceReport& out) {
    if (piece.kind == RawPieceKind::Data) throw Error("piece {}: names no file", piece.name);
    std::string_view bytes = piece.contents ? std::string_view(*piece.contents) : "";
    if (piece.source_offset < bytes.size()) {
      bytes = bytes.substr(piece.source_offset, piece.length);
      write_nonzero(bytes.data(), bytes.size(), piece.disk_offset, out);
    }
    out.hole_bytes = piece.length - out.copied_bytes;
  }

  void note(RawPieceReport& out, const std::string& reason) {
    out.copy_reason += (out.copy_reason.empty() ? "" : "; ") + reason;
  }

  // The full blocks that cannot be shared: an error under ReflinkOnly, else copied.
  void unshareable(const InputFile& file, const RawPiece& piece, uint64_t source_offset,
                   uint64_t disk_offset, uint64_t length, const std::string& reason,
                   RawPieceReport& out) {
    if (options_.policy == RawCopyPolicy::ReflinkOnly) {
      throw Error(
          "{}: cannot share its blocks into the raw image {}: {}; allow copying to "
          "copy its {} bytes instead",
          who(piece, file), image_name_, reason, length);
    }
    if (report_.reflinked) {
      report_.reflinked = false;
      report_.reflink_problem = fmt::format("{}: {}", piece.name, reason);
    }
    note(out, fmt::format("{} bytes copied: {}", length, reason));
    copy_data(file, piece, source_offset, disk_offset, length);
    out.copied_bytes += length;
  }

  // A layer: a partial block at its start (shared with the previous piece's end), the full
  // blocks (shared), a partial block at its end; or, when the file offset and the disk offset
  // do not sit at the same place in a block, no block can be shared at all.
  void assemble_data(const InputFile& file, const RawPiece& piece, uint64_t present,
                     RawPieceReport& out) {
    uint64_t block = report_.block_size;
    uint64_t source = piece.source_offset;
    uint64_t disk = piece.disk_offset;
    if (source % block != disk % block) {
      std::string reason =
          disk % block != 0 ? fmt::format(
                                  "its disk offset {} is not a multiple of the {}-byte filesystem "
                                  "block (byte {} of a block; its file offset is byte {})",
                                  disk, block, disk % block, source % block)
                            : fmt::format(
                                  "its file offset {} is not a multiple of the {}-byte filesystem "
                                  "block while its disk offset {} is",
                                  source, block, disk);
      unshareable(file, piece, source, disk, present, reason, out);
      return;
    }
    uint64_t head = std::min(present, (block - disk % block) % block);
    uint64_t full = align_down(present - head, block);
    uint64_t tail = present - head - full;
    if (head > 0) {
      copy_plain(file, piece, source, disk, head);
      out.copied_bytes += head;
      note(out, fmt::format("its first {} bytes are a partial block", head));
    }
    if (full > 0) share(file, piece, source + head, disk + head, full, out);
    if (tail > 0) {
      copy_plain(file, piece, source + head + full, disk + head + full, tail);
      out.copied_bytes += tail;
      note(out, fmt::format("its last {} bytes are a partial block", tail));
    }
  }

  void share(const InputFile& file, const RawPiece& piece, uint64_t source, uint64_t disk,
             uint64_t length, RawPieceReport& out) {
    // The file must still be the one opened (and checked) when its blocks are taken.
    check_unchanged(file, piece, "before its blocks were shared");
    uint64_t done = 0;
    while (done < length) {
      uint64_t step = std::min(length - done, kCallChunk);
      struct file_clone_range range {};
      range.src_fd = file.fd.get();
      range.src_offset = source + done;
      range.src_length = step;
      range.dest_offset = disk + done;
      if (::ioctl(image_fd_, FICLONERANGE, &range) == 0) {
        done += step;
        out.shared_bytes += step;
        continue;
      }
      int error_number = errno;
      if (error_number == EINTR) continue;
      auto reason = refusal_reason(error_number, file.fd.get(), image_fd_);
      if (!reason) {
        throw_errno_message(
            error_number,
            fmt::format("{}: cannot share {} bytes at file offset {} into {} "
                        "at byte {} (FICLONERANGE)",
                        who(piece, file), step, source + done, image_name_, disk + done));
      }
      unshareable(file, piece, source + done, disk + done, length - done, *reason, out);
      return;
    }
  }

  // Bulk copy of a layer's blocks: copy_file_range (in-kernel, no round trip through us),
  // pread/pwrite where the kernel cannot copy between these two files.
  void copy_data(const InputFile& file, const RawPiece& piece, uint64_t source, uint64_t disk,
                 uint64_t length) {
    bool kernel_copy = true;
    uint64_t done = 0;
    while (done < length && kernel_copy) {
      loff_t in = static_cast<loff_t>(source + done);
      loff_t at = static_cast<loff_t>(disk + done);
      ssize_t n = ::copy_file_range(file.fd.get(), &in, image_fd_, &at,
                                    std::min(length - done, kCallChunk), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
          kernel_copy = false;
          break;
        }
        throw_errno("{}: cannot copy {} bytes at file offset {} into {}", who(piece, file),
                    length - done, source + done, image_name_);
      }
      if (n == 0) throw_truncated(file, piece, source + done);
      done += static_cast<uint64_t>(n);
    }
    if (done < length) copy_plain(file, piece, source + done, disk + done, length - done);
  }

  [[noreturn]] void throw_truncated(const InputFile& file, const RawPiece& piece,
                                    uint64_t offset) const {
    throw Error("{}: ended at byte {} while it was being copied (it was {} bytes)",
                who(piece, file), offset, file.st.st_size);
  }

  size_t read_chunk(const InputFile& file, const RawPiece& piece, uint64_t offset, size_t length) {
    size_t got = pread_full(file.fd.get(), buffer_.data(), length, offset, who(piece, file));
    if (got != length) throw_truncated(file, piece, offset + got);
    return got;
  }

  void copy_plain(const InputFile& file, const RawPiece& piece, uint64_t source, uint64_t disk,
                  uint64_t length) {
    for (uint64_t done = 0; done < length;) {
      size_t step = static_cast<size_t>(std::min(length - done, kCopyChunk));
      read_chunk(file, piece, source + done, step);
      write_all(image_fd_, buffer_.data(), step, image_name_, static_cast<int64_t>(disk + done));
      done += step;
    }
  }

  // Metadata and filler: only the source's data regions are read (SEEK_DATA/SEEK_HOLE), and of
  // those only image blocks that are not all zeros are written; the rest stays holes.
  void copy_nonzero(const InputFile& file, const RawPiece& piece, uint64_t source, uint64_t disk,
                    uint64_t length, RawPieceReport& out) {
    int fd = file.fd.get();
    uint64_t end = source + length;
    for (uint64_t pos = source; pos < end;) {
      off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
      uint64_t data_end = end;
      if (data < 0) {
        if (errno == ENXIO) break;       // nothing but hole up to the end of the file
        data = static_cast<off_t>(pos);  // no SEEK_DATA here: read everything
      } else {
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole >= 0) data_end = std::min(end, static_cast<uint64_t>(hole));
      }
      uint64_t start = static_cast<uint64_t>(data);
      if (start >= end) break;
      copy_nonzero_blocks(file, piece, start, disk + (start - source), data_end - start, out);
      pos = data_end;
    }
  }

  void copy_nonzero_blocks(const InputFile& file, const RawPiece& piece, uint64_t source,
                           uint64_t disk, uint64_t length, RawPieceReport& out) {
    for (uint64_t done = 0; done < length;) {
      size_t step = static_cast<size_t>(std::min(length - done, kCopyChunk));
      read_chunk(file, piece, source + done, step);
      write_nonzero(buffer_.data(), step, disk + done, out);
      done += step;
    }
  }

  // Writes the image blocks of bytes[0, length) (at disk offset `disk`) that are not all zero;
  // split at the image's block boundaries, so a skipped run is whole blocks of hole.
  void write_nonzero(const char* bytes, size_t length, uint64_t disk, RawPieceReport& out) {
    uint64_t block = report_.block_size;
    for (size_t at = 0; at < length;) {
      uint64_t image_at = disk + at;
      size_t run = static_cast<size_t>(std::min<uint64_t>(length - at, block - image_at % block));
      const char* run_bytes = bytes + at;
      bool zero = run_bytes[0] == 0 && std::memcmp(run_bytes, run_bytes + 1, run - 1) == 0;
      if (!zero) {
        write_all(image_fd_, run_bytes, run, image_name_, static_cast<int64_t>(image_at));
        out.copied_bytes += run;
      }
      at += run;
    }
  }

  int image_fd_;
  std::string image_name_;
  const RawImageOptions& options_;
  RawImageReport report_;
  std::map<std::string, SourceState> seen_;
  std::vector<char> buffer_;
};

std::string temp_name_for(const std::string& name) {
  std::random_device random;
  return fmt::format(".{}.tmp-{:08x}", name, random());
}

// Removes a named temp file unless released (the rename happened).
struct TempNameGuard {
  int dir_fd = -1;
  std::string name;
  ~TempNameGuard() {
    if (!name.empty()) ::unlinkat(dir_fd, name.c_str(), 0);
  }
};

}  // namespace

const char* to_string(RawPieceKind kind) {
  switch (kind) {
    case RawPieceKind::Data: return "data";
    case RawPieceKind::Metadata: return "metadata";
    case RawPieceKind::Filler: return "filler";
  }
  return "?";
}

std::string filesystem_name(int fd) {
  struct statfs sfs {};
  if (::fstatfs(fd, &sfs) != 0) return "unknown filesystem";
  switch (static_cast<unsigned long>(sfs.f_type)) {
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case EXT4_SUPER_MAGIC: return "ext4";  // also ext2 and ext3
    case TMPFS_MAGIC: return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case NFS_SUPER_MAGIC: return "nfs";
    case F2FS_SUPER_MAGIC: return "f2fs";
    case 0x2fc12fc1: return "zfs";
    case 0xca451a4e: return "bcachefs";
    case 0x65735546: return "fuse";
    default: return fmt::format("filesystem 0x{:x}", static_cast<unsigned long>(sfs.f_type));
  }
}

nlohmann::json to_json(const RawImageReport& report) {
  nlohmann::json pieces = nlohmann::json::array();
  for (const auto& piece : report.pieces) {
    pieces.push_back({{"index", piece.index},
                      {"kind", to_string(piece.kind)},
                      {"name", piece.name},
                      {"path", piece.path},
                      {"disk_offset", piece.disk_offset},
                      {"length", piece.length},
                      {"source_offset", piece.source_offset},
                      {"shared_bytes", piece.shared_bytes},
                      {"copied_bytes", piece.copied_bytes},
                      {"hole_bytes", piece.hole_bytes},
                      {"copy_reason", piece.copy_reason}});
  }
  return {{"path", report.path},
          {"size", report.size},
          {"block_size", report.block_size},
          {"filesystem", report.filesystem},
          {"reflinked", report.reflinked},
          {"reflink_problem", report.reflink_problem},
          {"shared_bytes", report.shared_bytes},
          {"copied_bytes", report.copied_bytes},
          {"hole_bytes", report.hole_bytes},
          {"pieces", pieces}};
}

RawImageReport fill_raw_image(int image_fd, const std::string& image_name,
                              const std::vector<RawPiece>& pieces, const RawImageOptions& options) {
  return Assembler(image_fd, image_name, options).run(pieces);
}

RawImageReport assemble_raw_image(const std::vector<RawPiece>& pieces,
                                  const std::string& output_path, const RawImageOptions& options) {
  fs::path target = fs::absolute(fs::path(output_path)).lexically_normal();
  std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw Error("raw image {}: not a file name", output_path);
  }
  std::string dir = target.parent_path().string();
  UniqueFd dir_fd = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  // Unnamed until complete: a failure or a kill before the link leaves nothing to clean.
  UniqueFd image(::openat(dir_fd.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, options.mode));
  TempNameGuard guard{dir_fd.get(), {}};
  if (!image) {
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
      throw_errno("raw image {}: cannot create a temp file in {}", output_path, dir);
    }
    std::string temp = temp_name_for(name);
    image = openat_or_throw(dir_fd.get(), temp, O_RDWR | O_CREAT | O_EXCL, options.mode);
    guard.name = temp;
  }
  if (::fchmod(image.get(), options.mode) != 0) {
    throw_errno("raw image {}: cannot set its mode", output_path);
  }
  RawImageReport report = fill_raw_image(image.get(), target.string(), pieces, options);
  if (guard.name.empty()) {
    std::string temp = temp_name_for(name);
    std::string proc = fmt::format("/proc/self/fd/{}", image.get());
    if (::linkat(AT_FDCWD, proc.c_str(), dir_fd.get(), temp.c_str(), AT_SYMLINK_FOLLOW) != 0 &&
        ::linkat(image.get(), "", dir_fd.get(), temp.c_str(), AT_EMPTY_PATH) != 0) {
      throw_errno("raw image {}: cannot give the finished temp file a name in {}", output_path,
                  dir);
    }
    guard.name = temp;
  }
  if (::renameat(dir_fd.get(), guard.name.c_str(), dir_fd.get(), name.c_str()) != 0) {
    throw_errno("raw image {}: cannot rename {} to it", output_path, guard.name);
  }
  guard.name.clear();
  if (::fsync(dir_fd.get()) != 0) throw_errno("cannot fsync directory {}", dir);
  return report;
}

std::vector<RawPiece> raw_pieces_from_descriptor(const vmdk::Descriptor& descriptor,
                                                 const std::string& descriptor_dir) {
  fs::path dir = fs::absolute(fs::path(descriptor_dir)).lexically_normal();
  std::vector<RawPiece> pieces;
  std::map<std::string, size_t> layer_of;
  uint64_t disk = 0;
  for (size_t i = 0; i < descriptor.extents.size(); ++i) {
    const vmdk::FlatExtent& extent = descriptor.extents[i];
    std::string what = fmt::format("extent {} ({})", i + 1, extent.path);
    if (extent.path.rfind("/dev/fdset/", 0) == 0) {
      throw Error(
          "{}: an fd-passing descriptor names no file to read; compose without fd sets "
          "to make a raw image",
          what);
    }
    if (extent.path.empty()) throw Error("{}: names no file", what);
    if (extent.sectors == 0) continue;  // adds nothing to the disk (QEMU skips it too)
    fs::path path = fs::path(extent.path);
    if (path.is_relative()) path = dir / path;
    path = path.lexically_normal();
    uint64_t length = mul_or_throw<uint64_t>(extent.sectors, kSectorSize, what + ": size");
    uint64_t source = mul_or_throw<uint64_t>(extent.offset, kSectorSize, what + ": offset");
    RawPieceKind kind = RawPieceKind::Data;
    std::string file = path.filename().string();
    if (path.parent_path() == dir && (file == kHeadFile || file == kTailFile)) {
      kind = RawPieceKind::Metadata;
    } else if (path.parent_path() == dir && file == kFillerFile) {
      kind = RawPieceKind::Filler;
    }
    if (!pieces.empty()) {
      RawPiece& last = pieces.back();
      if (last.path == path.string() && last.kind == kind &&
          add_checked(last.source_offset, last.length) == source) {
        last.length = add_or_throw(last.length, length, what + ": size");
        disk = add_or_throw(disk, length, what + ": disk size");
        continue;
      }
    }
    RawPiece piece;
    piece.kind = kind;
    piece.path = path.string();
    piece.disk_offset = disk;
    piece.length = length;
    piece.source_offset = source;
    if (kind == RawPieceKind::Data) {
      auto [it, inserted] = layer_of.try_emplace(piece.path, layer_of.size());
      piece.name = fmt::format("layer {} ({})", it->second, piece.path);
    } else if (kind == RawPieceKind::Metadata) {
      piece.name = file == kHeadFile ? "gpt-head" : "gpt-tail";
    } else {
      piece.name = "zero filler";
    }
    disk = add_or_throw(disk, length, what + ": disk size");
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

RawImageReport assemble_raw_image_from_descriptor(const std::string& descriptor_path,
                                                  const std::string& output_path,
                                                  const RawImageOptions& options) {
  std::string absolute = fs::absolute(fs::path(descriptor_path)).lexically_normal().string();
  std::vector<RawPiece> pieces;
  try {
    std::string text = vmdk::read_descriptor_bytes(absolute);
    vmdk::Descriptor descriptor = vmdk::to_descriptor(vmdk::read_as_qemu(text, absolute));
    pieces = raw_pieces_from_descriptor(descriptor, fs::path(absolute).parent_path().string());
  } catch (const std::exception& error) {
    throw Error(with_context("descriptor " + descriptor_path, error));
  }
  return assemble_raw_image(pieces, output_path, options);
}

ReflinkSupport reflink_possible(int source_fd, int image_dir_fd) {
  ReflinkSupport out;
  struct stat st {};
  if (::fstat(source_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    out.reason = "the source is not a regular file";
    return out;
  }
  if (st.st_size == 0) {
    out.reason = "the source is empty: it has no block to share";
    return out;
  }
  UniqueFd probe(::openat(image_dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!probe) {
    out.error_number = errno;
    out.reason = fmt::format("cannot create an unnamed temp file there ({})",
                             std::strerror(out.error_number));
    return out;
  }
  struct statfs sfs {};
  if (::fstatfs(probe.get(), &sfs) != 0 || sfs.f_bsize <= 0) {
    out.error_number = errno;
    out.reason = "cannot read the filesystem's block size";
    return out;
  }
  uint64_t block = static_cast<uint64_t>(sfs.f_bsize);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  struct file_clone_range range {};
  range.src_fd = source_fd;
  range.src_length = size < block ? size : block;  // a short file: up to its end, allowed
  int rc = 0;
  do {
    rc = ::ioctl(probe.get(), FICLONERANGE, &range);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) {
    out.possible = true;
    return out;
  }
  out.error_number = errno;
  out.reason =
      refusal_reason(out.error_number, source_fd, probe.get())
          .value_or(fmt::format("FICLONERANGE failed: {}", std::strerror(out.error_number)));
  return out;
}

}  // namespace evmdk::host
