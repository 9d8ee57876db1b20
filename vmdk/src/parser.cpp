#include "evmdk/vmdk/parser.h"

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <limits>

#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::vmdk {
namespace {

// QEMU's vmdk_read_cid() clears the last byte of its 10,240-byte buffer; vmdk_parent_open()
// keeps all of it.
constexpr size_t kCidWindow = kQemuCidWindowBytes - 1;
constexpr size_t kHintWindow = kQemuCidWindowBytes;
constexpr size_t kCreateTypeBufferBytes = 128;
constexpr size_t kBackingPathMax = 4096;

constexpr std::array<std::string_view, 6> kQemuCreateTypes = {
    "monolithicFlat",    "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat"};
constexpr std::array<std::string_view, 5> kQemuExtentTypes = {"FLAT", "SPARSE", "VMFS",
                                                              "VMFSSPARSE", "SESPARSE"};

bool is_c_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// A cursor over a NUL-free buffer that mimics the glibc scanf conversions QEMU uses.
class Scanner {
 public:
  explicit Scanner(std::string_view text, size_t pos) : text_(text), pos_(pos) {}
  size_t pos() const { return pos_; }
  bool at_end() const { return pos_ >= text_.size(); }

  void skip_space() {
    while (!at_end() && is_c_space(text_[pos_])) ++pos_;
  }
  // %Ns: skips whitespace, reads 1..width non-space bytes.
  std::optional<std::string> string(size_t width) {
    skip_space();
    size_t start = pos_;
    while (!at_end() && !is_c_space(text_[pos_]) && pos_ - start < width) ++pos_;
    if (pos_ == start) return std::nullopt;
    return std::string(text_.substr(start, pos_ - start));
  }
  // %" SCNd64: optional sign and decimal digits; glibc saturates on overflow.
  std::optional<int64_t> decimal() {
    skip_space();
    size_t p = pos_;
    bool negative = false;
    if (p < text_.size() && (text_[p] == '+' || text_[p] == '-')) negative = text_[p++] == '-';
    size_t digits = p;
    // Accumulate as negative so INT64_MIN is representable.
    int64_t value = 0;
    bool overflow = false;
    while (p < text_.size() && text_[p] >= '0' && text_[p] <= '9') {
      int digit = text_[p++] - '0';
      if (value < (std::numeric_limits<int64_t>::min() + digit) / 10) {
        overflow = true;
      } else {
        value = value * 10 - digit;
      }
    }
    if (p == digits) return std::nullopt;
    pos_ = p;
    if (overflow) {
      return negative ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
    }
    if (!negative) {
      if (value == std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::max();
      return -value;
    }
    return value;
  }
  // %x into a 32-bit unsigned: optional sign, optional 0x, hex digits, converted with strtoul
  // (saturating at ULONG_MAX) and truncated to 32 bits.
  std::optional<uint32_t> hex32() {
    skip_space();
    size_t p = pos_;
    bool negative = false;
    if (p < text_.size() && (text_[p] == '+' || text_[p] == '-')) negative = text_[p++] == '-';
    bool any_digit = false;
    if (p < text_.size() && text_[p] == '0') {
      any_digit = true;
      ++p;
      if (p < text_.size() && (text_[p] == 'x' || text_[p] == 'X')) ++p;
    }
    uint64_t value = 0;
    bool overflow = false;
    while (p < text_.size() && std::isxdigit(static_cast<unsigned char>(text_[p]))) {
      char c = text_[p++];
      unsigned digit = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      if (value > (std::numeric_limits<uint64_t>::max() - digit) / 16) overflow = true;
      value = value * 16 + digit;
      any_digit = true;
    }
    if (!any_digit) return std::nullopt;
    pos_ = p;
    if (overflow) value = std::numeric_limits<uint64_t>::max();
    if (negative && !overflow) value = 0 - value;
    return static_cast<uint32_t>(value);
  }
  bool literal(char c) {
    if (at_end() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  // %N[^\n\r"]
  std::optional<std::string> quoted_name(size_t width) {
    size_t start = pos_;
    while (!at_end() && pos_ - start < width && text_[pos_] != '\n' && text_[pos_] != '\r' &&
           text_[pos_] != '"') {
      ++pos_;
    }
    if (pos_ == start) return std::nullopt;
    return std::string(text_.substr(start, pos_ - start));
  }

 private:
  std::string_view text_;
  size_t pos_;
};

// sscanf(p, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, ...)
void scan_extent_line(std::string_view text, size_t start, QemuExtentLine& out) {
  Scanner s(text, start);
  s.skip_space();
  if (s.at_end()) {
    out.matches = -1;
    return;
  }
  auto access = s.string(10);
  if (!access) return;
  out.access = *access;
  out.matches = 1;
  auto sectors = s.decimal();
  if (!sectors) return;
  out.sectors = *sectors;
  out.matches = 2;
  auto type = s.string(10);
  if (!type) return;
  out.type = *type;
  out.matches = 3;
  s.skip_space();
  if (!s.literal('"')) return;
  auto name = s.quoted_name(kQemuMaxPathBytes);
  if (!name) return;
  out.path = *name;
  out.matches = 4;
  if (!s.literal('"')) return;
  auto offset = s.decimal();
  if (!offset) return;
  out.offset = *offset;
  out.matches = 5;
}

std::optional<size_t> find_in(std::string_view text, std::string_view needle) {
  size_t at = text.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  return at;
}

std::string glue_relative(std::string_view descriptor_path, const std::string& name) {
  size_t slash = descriptor_path.rfind('/');
  if (slash == std::string_view::npos) return name;
  return std::string(descriptor_path.substr(0, slash + 1)) + name;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_c_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_c_space(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view next_token(std::string_view& rest) {
  rest = trim(rest);
  size_t end = 0;
  while (end < rest.size() && !is_c_space(rest[end])) ++end;
  std::string_view token = rest.substr(0, end);
  rest.remove_prefix(end);
  return token;
}

// A spec number: decimal, or 0x-prefixed hex (which the spec does not allow but a writer
// might mean).
std::optional<uint64_t> spec_number(std::string_view token, bool& hex) {
  hex = token.size() > 2 && token[0] == '0' && (token[1] == 'x' || token[1] == 'X');
  std::string_view digits = hex ? token.substr(2) : token;
  if (digits.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : digits) {
    unsigned digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (hex && std::isxdigit(static_cast<unsigned char>(c))) {
      digit = (c | 0x20) - 'a' + 10;
    } else {
      return std::nullopt;
    }
    unsigned base = hex ? 16 : 10;
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / base) return std::nullopt;
    value = value * base + digit;
  }
  return value;
}

std::optional<SpecExtent> spec_extent(size_t line_number, std::string_view line) {
  std::string_view rest = line;
  SpecExtent extent;
  extent.line = line_number;
  std::string_view access = next_token(rest);
  if (!iequals(access, "RW") && !iequals(access, "RDONLY") && !iequals(access, "NOACCESS")) {
    return std::nullopt;
  }
  extent.access = std::string(access);
  auto sectors = spec_number(next_token(rest), extent.sectors_hex);
  if (!sectors) return std::nullopt;
  extent.sectors = *sectors;
  std::string_view type = next_token(rest);
  if (type.empty()) return std::nullopt;
  extent.type = std::string(type);
  rest = trim(rest);
  if (!rest.empty() && (rest.front() == '"' || rest.front() == '\'')) {
    char quote = rest.front();
    size_t close = rest.find(quote, 1);
    if (close == std::string_view::npos) return std::nullopt;
    extent.path = std::string(rest.substr(1, close - 1));
    extent.quote = quote;
    rest.remove_prefix(close + 1);
  } else if (!rest.empty()) {
    extent.path = std::string(next_token(rest));
    extent.quote = 0;
  }
  std::string_view offset = next_token(rest);
  if (!offset.empty()) {
    extent.offset = spec_number(offset, extent.offset_hex);
    if (!extent.offset) return std::nullopt;
  }
  extent.trailing = std::string(trim(rest));
  return extent;
}

SpecEntry spec_entry(size_t line_number, std::string_view line, size_t equals) {
  SpecEntry entry;
  entry.line = line_number;
  std::string_view key = line.substr(0, equals);
  std::string_view value = line.substr(equals + 1);
  entry.spaced =
      (!key.empty() && is_c_space(key.back())) || (!value.empty() && is_c_space(value.front()));
  entry.key = std::string(trim(key));
  value = trim(value);
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
    entry.quoted = true;
  }
  entry.value = std::string(value);
  return entry;
}

}  // namespace

size_t QemuReading::line_of(size_t byte_offset) const {
  auto it = std::upper_bound(line_starts.begin(), line_starts.end(), byte_offset);
  return static_cast<size_t>(it - line_starts.begin());
}

QemuReading read_as_qemu(std::string_view input, std::string_view descriptor_path) {
  QemuReading r;
  r.file_bytes = input.size();
  r.line_starts.push_back(0);
  for (size_t i = 0; i < input.size(); ++i) {
    if (input[i] == '\n' && i + 1 < input.size()) r.line_starts.push_back(i + 1);
  }

  std::string_view text = input.substr(0, std::min<size_t>(input.size(), kQemuMaxDescriptorBytes));
  r.truncated = input.size() > text.size();
  // QEMU treats the buffer as a C string.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    r.nul_offset = nul;
    text = text.substr(0, nul);
  }
  r.bytes_read = text.size();
  auto fail = [&r](std::string message) {
    if (r.open_error.empty()) r.open_error = std::move(message);
  };

  if (input.size() < 4) fail("File is too small, not a valid image");

  // createType: strstr, then skip exactly two bytes (meant to be `="`), up to the next '"'.
  r.create_type_offset = find_in(text, "createType");
  if (!r.create_type_offset) {
    fail("invalid VMDK image descriptor");
  } else {
    size_t value = *r.create_type_offset + 10 + 2;
    size_t quote = value < text.size() ? text.find('"', value) : std::string_view::npos;
    if (quote == std::string_view::npos || quote - value + 1 > kCreateTypeBufferBytes) {
      fail("invalid VMDK image descriptor");
    } else {
      r.create_type = std::string(text.substr(value, quote - value));
      if (std::find(kQemuCreateTypes.begin(), kQemuCreateTypes.end(), *r.create_type) ==
          kQemuCreateTypes.end()) {
        fail(fmt::format("Unsupported image type '{}'", *r.create_type));
      }
    }
  }

  // Extent lines: a scan starts at every line start, and may run on into later lines.
  for (size_t p = 0; p < text.size();) {
    QemuExtentLine scan;
    scan.line = r.line_of(p);
    scan_extent_line(text, p, scan);
    size_t eol = text.find('\n', p);
    size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    bool rw = scan.matches >= 4 && scan.access == "RW";
    if (rw) {
      if (scan.type == "FLAT") {
        if (scan.matches != 5 || scan.offset < 0) scan.outcome = QemuExtentLine::Outcome::Invalid;
      } else if (scan.type == "VMFS") {
        if (scan.matches == 4) {
          scan.offset = 0;
        } else {
          scan.outcome = QemuExtentLine::Outcome::Invalid;
        }
      } else if (scan.matches != 4) {
        scan.outcome = QemuExtentLine::Outcome::Invalid;
      }
    }
    if (scan.outcome == QemuExtentLine::Outcome::Invalid) {
      std::string_view line = text.substr(p, next - p);
      if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
      fail(fmt::format("Invalid extent line: {}", line));
    } else if (rw && scan.sectors > 0 &&
               std::find(kQemuExtentTypes.begin(), kQemuExtentTypes.end(), scan.type) !=
                   kQemuExtentTypes.end()) {
      scan.outcome = QemuExtentLine::Outcome::Accepted;
      QemuExtent extent;
      extent.line = scan.line;
      extent.last_line = scan.line;  // corrected below for scans starting on blank lines
      extent.type = scan.type;
      extent.path = scan.path;
      extent.sectors = scan.sectors;
      extent.offset = scan.offset;
      if (!scan.path.empty() && scan.path.front() == '/') {
        extent.resolved_path = scan.path;
      } else if (descriptor_path.empty()) {
        fail(fmt::format("Cannot use relative extent paths with VMDK descriptor file '{}'",
                         descriptor_path));
      } else {
        extent.resolved_path = glue_relative(descriptor_path, scan.path);
      }
      uint64_t sectors = static_cast<uint64_t>(extent.sectors);
      constexpr uint64_t kMaxSectors =
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / kSectorSize;
      if (sectors > kMaxSectors || r.total_sectors > kMaxSectors - sectors ||
          static_cast<uint64_t>(extent.offset) > kMaxSectors) {
        r.size_overflows = true;
        r.total_sectors = kMaxSectors;
      } else {
        r.total_sectors += sectors;
      }
      r.extents.push_back(std::move(extent));
    }
    r.scanned.push_back(std::move(scan));
    p = next;
  }

  // The real extent line of a scan that started on a blank line is a later line.
  for (QemuExtent& extent : r.extents) {
    size_t start = r.line_starts[extent.line - 1];
    size_t first = start;
    while (first < text.size() && is_c_space(text[first])) ++first;
    extent.last_line = r.line_of(first);
  }

  // parentFileNameHint, CID and parentCID come from the first 10 KiB only.
  std::string_view head = input.substr(0, std::min(input.size(), kHintWindow));
  if (size_t nul = head.find('\0'); nul != std::string_view::npos) head = head.substr(0, nul);
  r.parent_file_name_hint_offset = find_in(head, "parentFileNameHint");
  if (r.parent_file_name_hint_offset) {
    size_t value = *r.parent_file_name_hint_offset + 18 + 2;
    size_t quote = value < head.size() ? head.find('"', value) : std::string_view::npos;
    if (quote == std::string_view::npos || quote - value > kBackingPathMax - 1) {
      fail("Invalid argument (unreadable parentFileNameHint)");
    } else {
      r.parent_file_name_hint = std::string(head.substr(value, quote - value));
    }
  }
  std::string_view cid_head = head.substr(0, std::min(head.size(), kCidWindow));
  r.cid_offset = find_in(cid_head, "CID");
  if (r.cid_offset) {
    Scanner s(cid_head, std::min(cid_head.size(), *r.cid_offset + 4));
    r.cid = s.hex32();
  }
  if (!r.cid) fail("Invalid argument (no readable CID in the first 10,240 bytes)");
  r.parent_cid_offset = find_in(cid_head, "parentCID");
  if (r.parent_cid_offset) {
    Scanner s(cid_head, std::min(cid_head.size(), *r.parent_cid_offset + 10));
    r.parent_cid = s.hex32();
  }
  if (!r.parent_cid) fail("Invalid argument (no readable parentCID in the first 10,240 bytes)");
  return r;
}

const SpecEntry* SpecReading::find_header(std::string_view key) const {
  for (const SpecEntry& entry : header) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

SpecReading read_as_spec(std::string_view text) {
  SpecReading r;
  size_t line_number = 0;
  for (size_t p = 0; p < text.size();) {
    size_t eol = text.find('\n', p);
    size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    std::string_view line = text.substr(p, (eol == std::string_view::npos ? text.size() : eol) - p);
    p = next;
    ++line_number;
    std::string_view content = trim(line);
    if (content.empty()) {
      r.blank_lines.push_back(line_number);
      continue;
    }
    if (content.front() == '#') continue;
    if (auto extent = spec_extent(line_number, content)) {
      r.extents.push_back(std::move(*extent));
      continue;
    }
    size_t equals = content.find('=');
    if (equals != std::string_view::npos && equals > 0) {
      SpecEntry entry = spec_entry(line_number, content, equals);
      (entry.key.rfind("ddb.", 0) == 0 ? r.ddb : r.header).push_back(std::move(entry));
      continue;
    }
    r.unparsed.emplace_back(line_number, std::string(content));
  }
  r.line_count = line_number;
  return r;
}

std::string read_descriptor_bytes(const std::string& path) {
  // A FIFO or device named as the descriptor must not hang or be read: regular files only.
  InputFile file = open_input_file(path, "descriptor");
  const UniqueFd& fd = file.fd;
  // Read a little past QEMU's cut so the linter can tell that something was cut.
  std::string bytes(kQemuMaxDescriptorBytes + 4096, '\0');
  size_t got = pread_full(fd.get(), bytes.data(), bytes.size(), 0, path);
  bytes.resize(got);
  return bytes;
}

Descriptor to_descriptor(const QemuReading& reading) {
  if (!reading.opens()) throw Error("QEMU would not open this descriptor: {}", reading.open_error);
  Descriptor d;
  if (reading.create_type == "monolithicFlat") {
    d.create_type = CreateType::MonolithicFlat;
  } else if (reading.create_type == "twoGbMaxExtentFlat") {
    d.create_type = CreateType::TwoGbMaxExtentFlat;
  } else {
    throw Error("createType {:?} is not a flat descriptor", reading.create_type.value_or(""));
  }
  for (const QemuExtent& extent : reading.extents) {
    if (extent.type != "FLAT") {
      throw Error("line {}: extent type {} is not FLAT", extent.last_line, extent.type);
    }
    d.extents.push_back(FlatExtent{extent.resolved_path, static_cast<uint64_t>(extent.sectors),
                                   static_cast<uint64_t>(extent.offset)});
  }
  return d;
}

}  // namespace evmdk::vmdk
