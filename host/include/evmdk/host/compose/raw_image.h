#pragma once
// The raw image of a composed disk: one plain file holding exactly the bytes the VMDK
// descriptor presents (GPT head, each layer at its LBA, the padding, the backup GPT; flat
// mode's fsmeta and blobs at their mapped_blkaddr), for VMMs that read no VMDK and for QEMU
// without the vmdk driver's one-request-at-a-time lock. The layers' blocks are shared into
// the image with FICLONERANGE where the filesystem can (XFS with reflink, btrfs): no data is
// written, no space used, and the image no longer changes when a layer file does. Where it
// cannot, the caller chooses between a clear refusal and a reported copy. See docs/compose.md.
#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/vmdk/descriptor.h"

namespace evmdk::host {

enum class RawPieceKind {
  // A layer, device blob or verity area: shared by reflink, else copied (when allowed).
  Data,
  // A small file compose wrote (GPT head or tail): copied, its all-zero blocks left as holes.
  Metadata,
  // The all-zero filler: left as holes. Should it hold non-zero bytes they are copied, so the
  // image still shows what the VMDK shows.
  Filler,
};

// "data", "metadata", "filler".
const char* to_string(RawPieceKind kind);

// `length` bytes of the disk, from `disk_offset`, are bytes `source_offset`.. of `path`. Bytes
// past the end of the file read as zeros (as QEMU reads a FLAT extent past its file's end).
struct RawPiece {
  RawPieceKind kind = RawPieceKind::Data;
  std::string name;  // in reports and errors: "layer 2 (/path/l2.erofs)", "gpt-head", ...
  std::string path;
  uint64_t disk_offset = 0;
  uint64_t length = 0;
  uint64_t source_offset = 0;
  // The file's size when the disk was planned: a different size is an error (the layer is
  // not the file composed). Unknown (nullopt) when only a descriptor is at hand.
  std::optional<uint64_t> expected_size;
  // Metadata or Filler given as bytes instead of a file (compose's GPT head and tail before
  // they exist as files): `path` is then empty. A Filler with neither is all holes.
  std::optional<std::string> contents;
};

enum class RawCopyPolicy {
  // Every full filesystem block of every data piece must be shared; only the partial blocks
  // at a piece's ends (shared with its neighbours) are copied. Anything else is an error that
  // names the piece and says why (different filesystems, no reflink support, misaligned).
  ReflinkOnly,
  // Where sharing is impossible, copy (copy_file_range) and report the bytes copied.
  AllowCopy,
};

struct RawImageOptions {
  RawCopyPolicy policy = RawCopyPolicy::ReflinkOnly;
  mode_t mode = 0444;  // of the output file (read-only, like the disk it stands for)
};

struct RawPieceReport {
  size_t index = 0;  // into the pieces given
  RawPieceKind kind = RawPieceKind::Data;
  std::string name;
  std::string path;  // the file actually read (symlinks resolved)
  uint64_t disk_offset = 0;
  uint64_t length = 0;
  uint64_t source_offset = 0;
  uint64_t shared_bytes = 0;  // shared with the source by FICLONERANGE
  uint64_t copied_bytes = 0;  // written into the image
  uint64_t hole_bytes = 0;    // left unwritten: zeros the image needs no block for
  // Why bytes of a data piece were copied ("its last 1000 bytes are a partial block", "xfs
  // without reflink support", ...); empty when every byte was shared.
  std::string copy_reason;
};

struct RawImageReport {
  std::string path;         // the image (final path after a commit)
  uint64_t size = 0;        // bytes: the disk's size
  uint64_t block_size = 0;  // the image filesystem's block, the unit of sharing
  std::string filesystem;   // of the image: "xfs", "btrfs", "ext4", ...
  // Every full block of every data piece was shared (nothing copied but partial blocks).
  bool reflinked = true;
  std::string reflink_problem;  // the first reason it was not, naming the piece
  uint64_t shared_bytes = 0;
  uint64_t copied_bytes = 0;
  uint64_t hole_bytes = 0;
  std::vector<RawPieceReport> pieces;
};

nlohmann::json to_json(const RawImageReport& report);

// Fills `image_fd` (an empty regular file open for writing, on the filesystem where the image
// lives; `image_name` names it in errors) with the disk the pieces describe. The pieces must
// tile the disk: sorted, contiguous from byte 0, none empty. Every source is opened with
// open_input_file (regular files only) and must keep its size and identity until it is done.
// Ends with fsync. Throws evmdk::Error naming the piece at fault.
RawImageReport fill_raw_image(int image_fd, const std::string& image_name,
                              const std::vector<RawPiece>& pieces,
                              const RawImageOptions& options = {});

// fill_raw_image() into a new unnamed file in output_path's directory (O_TMPFILE; a named
// hidden temp file where the filesystem has none), then fsync, rename over output_path and
// fsync the directory. Any failure, or a kill, leaves nothing behind.
RawImageReport assemble_raw_image(const std::vector<RawPiece>& pieces,
                                  const std::string& output_path,
                                  const RawImageOptions& options = {});

// The pieces of a composed disk's descriptor. Relative extent paths are taken relative to
// `descriptor_dir`, where compose's own files are recognised by name: gpt-head.img and
// gpt-tail.img are Metadata, zero.img the Filler; every other file is Data, named
// "layer K (path)" with K counting distinct files in disk order (compose's layer index for
// gpt disks; flat: 0 = fsmeta, K = device K). Extents continuing one another in the same file
// (twoGbMaxExtentFlat's 2 GiB split) are merged. Throws for /dev/fdset/N extents (they name
// no file) and for sizes that overflow.
std::vector<RawPiece> raw_pieces_from_descriptor(const vmdk::Descriptor& descriptor,
                                                 const std::string& descriptor_dir);

// Reads `descriptor_path` as QEMU would (vmdk::read_as_qemu, FLAT extents only) and
// assembles its raw image at output_path.
RawImageReport assemble_raw_image_from_descriptor(const std::string& descriptor_path,
                                                  const std::string& output_path,
                                                  const RawImageOptions& options = {});

struct ReflinkSupport {
  bool possible = false;
  std::string reason;    // why not (empty when possible)
  int error_number = 0;  // of the failed FICLONERANGE, 0 when none was tried or it worked
};

// Whether blocks of `source_fd` (a regular file) can be shared into a file created in the
// directory `image_dir_fd`: clones the source's first block into an unnamed temp file there
// (O_TMPFILE, gone on close). For `auto`: pick raw where this holds for every layer.
ReflinkSupport reflink_possible(int source_fd, int image_dir_fd);

// The filesystem a file descriptor is on, by statfs f_type: "xfs", "btrfs", "ext4", "tmpfs",
// ..., or "filesystem 0x<magic>".
std::string filesystem_name(int fd);

}  // namespace evmdk::host
