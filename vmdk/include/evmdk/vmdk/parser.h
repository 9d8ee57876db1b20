#pragma once
// Two readings of a VMDK descriptor text:
//  - read_as_qemu(): exactly what QEMU 7.2+ block/vmdk.c makes of it (substring searches for
//    the header keys, a sscanf-style scan for extent lines, the 1,048,575-byte cut, the
//    10,240-byte CID window, the blank-line-duplicates-an-extent quirk, ...).
//  - read_as_spec(): what the VMware Virtual Disk Format spec says the lines mean (line based,
//    blank lines and comments ignored, RDONLY/NOACCESS/ZERO extents part of the disk).
// The linter reports where the two differ; the extent map is built from the QEMU reading.
// See vmdk/README.md ("How QEMU reads a descriptor").
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/vmdk/descriptor.h"

namespace evmdk::vmdk {

// What QEMU's extent-line scan made of the text starting at one line.
struct QemuExtentLine {
  size_t line = 0;  // 1-based line where the scan started
  int matches = 0;  // sscanf's return value (-1 at end of input)
  std::string access;
  int64_t sectors = 0;
  std::string type;
  std::string path;  // as written (at most 511 bytes)
  int64_t offset = 0;
  enum class Outcome { Skipped, Accepted, Invalid } outcome = Outcome::Skipped;
};

// An extent QEMU adds to the disk.
struct QemuExtent {
  size_t line = 0;            // 1-based line where the scan started (may be a blank line)
  size_t last_line = 0;       // line the scan ended on (the real extent line)
  std::string type;           // FLAT, VMFS, SPARSE, VMFSSPARSE, SESPARSE
  std::string path;           // as written
  std::string resolved_path;  // absolute, or glued onto the descriptor path's dirname
  int64_t sectors = 0;
  int64_t offset = 0;  // in sectors into the file (0 for VMFS)
};

struct QemuReading {
  size_t file_bytes = 0;   // size of the input
  size_t bytes_read = 0;   // what QEMU parses: cut at 1,048,575 bytes and at the first NUL
  bool truncated = false;  // the 1,048,575-byte cut removed something
  std::optional<size_t> nul_offset;  // first NUL byte inside the parsed part

  std::optional<std::string> create_type;    // value as QEMU extracts it (may be garbage)
  std::optional<size_t> create_type_offset;  // byte offset of the first "createType"
  std::optional<uint32_t> cid;
  std::optional<size_t> cid_offset;  // byte offset of the first "CID" in the window
  std::optional<uint32_t> parent_cid;
  std::optional<size_t> parent_cid_offset;
  std::optional<std::string> parent_file_name_hint;  // QEMU would open this as a backing file
  std::optional<size_t> parent_file_name_hint_offset;

  std::vector<QemuExtentLine> scanned;  // every line the extent scan started at
  std::vector<QemuExtent> extents;      // in disk order
  uint64_t total_sectors = 0;           // sum of accepted extents (saturates on overflow)
  bool size_overflows = false;          // the byte size does not fit QEMU's int64

  // The error `qemu-img info` would report when opening, empty if QEMU opens the descriptor
  // (file-level errors such as a missing extent file are not checked here).
  std::string open_error;
  bool opens() const { return open_error.empty(); }

  size_t line_of(size_t byte_offset) const;  // 1-based
  std::vector<size_t> line_starts;           // byte offset of each line in the input
};

// descriptor_path: the path QEMU is given (used only to resolve relative extent names).
QemuReading read_as_qemu(std::string_view text, std::string_view descriptor_path);

// The VMware spec's reading, line by line.
struct SpecExtent {
  size_t line = 0;
  std::string access;  // as written; compare case-insensitively
  uint64_t sectors = 0;
  std::string type;  // as written
  std::optional<std::string> path;
  char quote = '"';  // '"', '\'' or 0 for an unquoted name
  std::optional<uint64_t> offset;
  bool sectors_hex = false;
  bool offset_hex = false;
  std::string trailing;  // text after the offset
};

struct SpecEntry {
  size_t line = 0;
  std::string key;
  std::string value;    // unquoted
  bool spaced = false;  // whitespace around '='
  bool quoted = false;
};

struct SpecReading {
  std::vector<SpecEntry> header;  // version, CID, parentCID, createType, parentFileNameHint, ...
  std::vector<SpecEntry> ddb;     // ddb.* entries
  std::vector<SpecExtent> extents;
  std::vector<size_t> blank_lines;
  std::vector<std::pair<size_t, std::string>> unparsed;  // lines that are none of the above
  size_t line_count = 0;

  const SpecEntry* find_header(std::string_view key) const;
};

SpecReading read_as_spec(std::string_view text);

// Reads a descriptor file: a little more than QEMU's 1,048,575-byte cut, so a reader can tell
// that something was cut. Throws evmdk::Error naming the file.
std::string read_descriptor_bytes(const std::string& path);

// The writer's model recovered from QEMU's reading: only for descriptors QEMU opens whose
// extents are all FLAT and whose createType is monolithicFlat or twoGbMaxExtentFlat.
// Extents are the lines as QEMU reads them (not re-merged). Throws evmdk::Error otherwise.
Descriptor to_descriptor(const QemuReading& reading);

}  // namespace evmdk::vmdk
