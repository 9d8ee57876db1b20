#include "evmdk/vmdk/lint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/parser.h"

namespace evmdk::vmdk {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

class Linter {
 public:
  Linter(std::string_view text, const std::string& path, const LintOptions& options)
      : text_(text),
        path_(path),
        options_(options),
        qemu_(read_as_qemu(text, path)),
        spec_(read_as_spec(text)) {}

  LintReport run() {
    report_.path = path_;
    // QEMU opens files starting with these magics as sparse (hosted) VMDK images.
    if (text_.substr(0, 4) == "KDMV" || text_.substr(0, 4) == "COWD") {
      add("not-a-descriptor", Severity::Error, 0,
          "this is a sparse VMDK image (binary header), not a text descriptor; QEMU reads it "
          "as such and this tool only handles flat descriptors");
      return std::move(report_);
    }
    check_size_and_bytes();
    check_create_type();
    check_cid("CID", qemu_.cid_offset, qemu_.cid.has_value());
    check_cid("parentCID", qemu_.parent_cid_offset, qemu_.parent_cid.has_value());
    check_parent_hint();
    for (const SpecExtent& extent : spec_.extents) check_spec_extent(extent);
    check_qemu_extents();
    check_unknown_lines();
    if (!qemu_.opens()) {
      add("qemu-open-error", Severity::Error, invalid_line(),
          fmt::format("QEMU refuses to open this descriptor: {}", qemu_.open_error));
    }
    check_readings_agree();
    std::stable_sort(report_.findings.begin(), report_.findings.end(),
                     [](const Finding& a, const Finding& b) { return a.line < b.line; });
    report_.path = path_;
    return std::move(report_);
  }

 private:
  void add(std::string id, Severity severity, size_t line, std::string message) {
    report_.findings.push_back(Finding{std::move(id), severity, line, std::move(message)});
  }

  // Byte offset of the first non-blank byte of a line.
  size_t content_offset(size_t line) const {
    size_t at = qemu_.line_starts[line - 1];
    while (at < text_.size() && is_space(text_[at])) ++at;
    return at;
  }

  size_t invalid_line() const {
    for (const QemuExtentLine& scan : qemu_.scanned) {
      if (scan.outcome == QemuExtentLine::Outcome::Invalid) return scan.line;
    }
    return 0;
  }

  void check_size_and_bytes() {
    if (qemu_.truncated) {
      add("descriptor-too-large", Severity::Error, qemu_.line_of(kQemuMaxDescriptorBytes),
          fmt::format("the descriptor is longer than {} bytes; QEMU silently ignores the rest "
                      "(from this line on, a number cut mid-way is misread)",
                      kQemuMaxDescriptorBytes));
    }
    if (qemu_.nul_offset) {
      add("nul-byte", Severity::Error, qemu_.line_of(*qemu_.nul_offset),
          fmt::format("NUL byte at offset {}: QEMU stops reading the descriptor there",
                      *qemu_.nul_offset));
    }
    if (spec_.line_count > kVirtualBoxMaxLines) {
      add("virtualbox-line-limit", Severity::Warning, kVirtualBoxMaxLines + 1,
          fmt::format("{} lines; VirtualBox refuses descriptors over {} lines", spec_.line_count,
                      kVirtualBoxMaxLines));
    }
  }

  // QEMU's key searches are case-sensitive: "createtype=" or "cid=" are not found.
  void report_wrong_case_key(std::string_view key) {
    for (const SpecEntry& entry : spec_.header) {
      if (entry.key != key && iequals(entry.key, key)) {
        add("wrong-case", Severity::Error, entry.line,
            fmt::format("key {:?} must be spelled {:?}; QEMU's search is case-sensitive", entry.key,
                        key));
      }
    }
  }

  void check_create_type() {
    const SpecEntry* entry = spec_.find_header("createType");
    if (!entry) {
      report_wrong_case_key("createType");
      add("missing-create-type", Severity::Error, 0,
          "no createType=\"...\" line; QEMU refuses the descriptor");
      return;
    }
    if (entry->spaced) {
      add("create-type-spacing", Severity::Error, entry->line,
          fmt::format("spaces around '=' in createType; QEMU skips exactly '=\"' and reads the "
                      "type as {:?}",
                      qemu_.create_type.value_or("")));
    }
    if (qemu_.create_type_offset && *qemu_.create_type_offset != content_offset(entry->line)) {
      size_t line = qemu_.line_of(*qemu_.create_type_offset);
      if (line != entry->line) {
        add("early-create-type-substring", Severity::Error, line,
            fmt::format("QEMU takes the first \"createType\" substring, here, not the createType "
                        "line {}",
                        entry->line));
      }
    }
    static constexpr std::string_view kQemuTypes[] = {"monolithicFlat",       "vmfs",
                                                      "vmfsSparse",           "seSparse",
                                                      "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"};
    bool qemu_accepts = std::find(std::begin(kQemuTypes), std::end(kQemuTypes), entry->value) !=
                        std::end(kQemuTypes);
    if (!qemu_accepts) {
      add("unsupported-create-type", Severity::Error, entry->line,
          fmt::format("createType {:?} is not one QEMU opens", entry->value));
    } else if (entry->value != "monolithicFlat" && entry->value != "twoGbMaxExtentFlat") {
      add("non-flat-create-type", Severity::Warning, entry->line,
          fmt::format("createType {:?}: only monolithicFlat and twoGbMaxExtentFlat are portable "
                      "flat descriptors",
                      entry->value));
    }
  }

  void check_cid(std::string_view key, std::optional<size_t> qemu_offset, bool readable) {
    const SpecEntry* entry = spec_.find_header(key);
    if (!entry) {
      report_wrong_case_key(key);
      add("missing-cid", Severity::Error, 0,
          fmt::format("no {}= line; QEMU fails with \"Invalid argument\"", key));
      return;
    }
    if (qemu_offset && *qemu_offset != content_offset(entry->line)) {
      add("early-cid-substring", Severity::Error, qemu_.line_of(*qemu_offset),
          fmt::format("QEMU reads {} from the first \"{}\" substring, here, not from line {}", key,
                      key, entry->line));
    } else if (!readable || !qemu_offset) {
      std::string why =
          content_offset(entry->line) >= kQemuCidWindowBytes - 1
              ? fmt::format("it is not within the first {} bytes", kQemuCidWindowBytes)
              : std::string("QEMU needs exactly KEY=<hex>");
      add("unreadable-cid", Severity::Error, entry->line,
          fmt::format("QEMU cannot read {} ({}) and fails with \"Invalid argument\"", key, why));
    }
  }

  void check_parent_hint() {
    if (qemu_.parent_file_name_hint_offset) {
      add("parent-file-name-hint", Severity::Error,
          qemu_.line_of(*qemu_.parent_file_name_hint_offset),
          fmt::format("\"parentFileNameHint\" makes QEMU open {:?} as a backing file",
                      qemu_.parent_file_name_hint.value_or("?")));
    } else if (const SpecEntry* entry = spec_.find_header("parentFileNameHint")) {
      add("parent-file-name-hint", Severity::Error, entry->line,
          "parentFileNameHint names a parent disk; a flat read-only disk must not have one");
    }
  }

  void check_spec_extent(const SpecExtent& e) {
    const size_t line = e.line;
    if (iequals(e.access, "RDONLY")) {
      add("rdonly-extent", Severity::Error, line,
          "RDONLY extent: QEMU skips the line silently, shifting every later extent; write RW "
          "and open the disk read-only");
    } else if (iequals(e.access, "NOACCESS")) {
      add("noaccess-extent", Severity::Error, line,
          "NOACCESS extent: QEMU skips the line silently, shifting every later extent");
    } else if (e.access != "RW") {
      add("wrong-case", Severity::Error, line,
          fmt::format("access {:?} must be \"RW\"; QEMU is case-sensitive and skips the line",
                      e.access));
    }
    if (iequals(e.type, "ZERO")) {
      add("zero-extent", Severity::Error, line,
          "ZERO extent: QEMU does not support it and skips the line, so every later extent "
          "lands at the wrong disk address; use FLAT over a sparse all-zero file");
    } else if (iequals(e.type, "FLAT")) {
      if (e.type != "FLAT") {
        add("wrong-case", Severity::Error, line,
            fmt::format("type {:?} must be \"FLAT\"; QEMU is case-sensitive", e.type));
      }
    } else {
      add("unsupported-extent-type", Severity::Error, line,
          fmt::format("extent type {:?}: only FLAT extents are supported", e.type));
    }
    if (e.path) {
      if (e.quote == 0) {
        add("unquoted-name", Severity::Error, line,
            "extent file name is not in double quotes; QEMU skips the line");
      } else if (e.quote == '\'') {
        add("single-quoted-name", Severity::Error, line,
            "extent file name is in single quotes; QEMU needs double quotes and skips the line");
      }
      if (e.path->size() > kQemuMaxPathBytes) {
        add("path-too-long", Severity::Error, line,
            fmt::format("extent file name is {} bytes; QEMU reads at most {}", e.path->size(),
                        kQemuMaxPathBytes));
      }
    }
    if (e.sectors_hex) {
      add("hex-sectors", Severity::Error, line,
          "hexadecimal sector count: QEMU reads decimal only (0x... is 0) and skips the line");
    } else if (e.sectors == 0) {
      add("non-positive-sectors", Severity::Error, line,
          "extent of 0 sectors: QEMU skips the line");
    }
    if (e.offset_hex) {
      add("hex-offset", Severity::Error, line,
          fmt::format("hexadecimal offset {:#x}: QEMU reads decimal only and silently uses 0",
                      *e.offset));
    }
    if (!e.trailing.empty()) {
      add("extent-trailing-text", Severity::Warning, line,
          fmt::format("text after the offset ({:?}) is ignored by QEMU", e.trailing));
    }
    const SpecEntry* type = spec_.find_header("createType");
    if (type && type->value == "twoGbMaxExtentFlat" && e.sectors > kTwoGbExtentSectors) {
      add("extent-over-2gib", Severity::Warning, line,
          fmt::format("{} sectors is over the 2 GiB ({} sectors) a twoGbMaxExtentFlat extent "
                      "may hold",
                      e.sectors, kTwoGbExtentSectors));
    }
  }

  void check_qemu_extents() {
    if (qemu_.extents.empty()) {
      add("no-usable-extent", Severity::Error, 0,
          "QEMU accepts no extent line: it opens a disk of size 0 (qemu-img info aborts)");
    }
    if (qemu_.size_overflows) {
      add("size-overflow", Severity::Error, 0,
          "the extents' sizes or offsets overflow QEMU's 64-bit byte arithmetic");
    }
    if (qemu_.extents.size() > kMaxExtentLines) {
      add("extent-count-fd-limit", Severity::Warning, 0,
          fmt::format("{} extents: QEMU holds one fd per extent line and the default limit is "
                      "1024; opening is slow and may fail",
                      qemu_.extents.size()));
    }
    std::set<std::string> checked;
    for (const QemuExtent& extent : qemu_.extents) {
      if (extent.line != extent.last_line) {
        add("blank-before-extent", Severity::Error, extent.line,
            fmt::format("blank line before the extent on line {}: QEMU adds that extent twice",
                        extent.last_line));
      }
      if (!extent.path.empty() && extent.path.front() != '/' &&
          checked.insert("relative:" + extent.path).second) {
        add("relative-path", Severity::Warning, extent.last_line,
            fmt::format("relative extent name {:?}: QEMU resolves it against the descriptor "
                        "path as given ({:?}), which fails for /dev/fdset or /proc/self/fd",
                        extent.path, extent.resolved_path));
      }
      if (options_.check_files) check_file(extent);
    }
  }

  void check_file(const QemuExtent& extent) {
    if (extent.resolved_path.empty()) return;
    // fd passing: QEMU resolves these from the fd sets its caller handed it, not the file
    // system, so there is nothing to check here.
    if (extent.resolved_path.rfind("/dev/fdset/", 0) == 0) return;
    auto [it, inserted] = file_sizes_.try_emplace(extent.resolved_path);
    if (inserted) it->second = file_size(extent.resolved_path);
    const auto& [size, problem] = it->second;
    if (!problem.empty()) {
      add("missing-extent-file", Severity::Error, extent.last_line,
          fmt::format("extent file {:?}: {}", extent.resolved_path, problem));
      return;
    }
    if (extent.type != "FLAT" && extent.type != "VMFS") return;
    uint64_t end = (static_cast<uint64_t>(extent.offset) + static_cast<uint64_t>(extent.sectors)) *
                   kSectorSize;
    if (!qemu_.size_overflows && end > size) {
      add("extent-past-eof", Severity::Error, extent.last_line,
          fmt::format("extent reaches byte {} of {:?}, which has {} bytes; QEMU reads zeros past "
                      "the end",
                      end, extent.resolved_path, size));
    }
  }

  static std::pair<uint64_t, std::string> file_size(const std::string& path) {
    // Opened without blocking (a FIFO extent would hang lint forever) and type-checked.
    InputFile file;
    try {
      file = open_input_file(path, "extent file", InputKind::RegularOrBlockDevice);
    } catch (const SystemError& error) {
      return {0, fmt::format("cannot open: {}", std::strerror(error.error_number()))};
    } catch (const Error&) {
      return {0, fmt::format("a {}, not a regular file or block device",
                             file_type_name(file_mode(path)))};
    }
    if (S_ISREG(file.st.st_mode)) return {static_cast<uint64_t>(file.st.st_size), ""};
    off_t end = ::lseek(file.fd.get(), 0, SEEK_END);
    if (end < 0) return {0, fmt::format("cannot size: {}", std::strerror(errno))};
    return {static_cast<uint64_t>(end), ""};
  }

  static mode_t file_mode(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_mode : 0;
  }

  void check_unknown_lines() {
    for (const auto& [line, content] : spec_.unparsed) {
      add("unknown-line", Severity::Warning, line,
          fmt::format("line is neither a comment, a key=value entry nor an extent: {:?}",
                      content.substr(0, 80)));
    }
  }

  // The safety net: if nothing above explains it, say that QEMU's disk differs from the spec's.
  void check_readings_agree() {
    if (report_.errors() > 0) return;
    struct Row {
      std::string path;
      uint64_t sectors, offset;
      size_t line;
    };
    std::vector<Row> spec_rows, qemu_rows;
    for (const SpecExtent& e : spec_.extents) {
      spec_rows.push_back({e.path.value_or(""), e.sectors, e.offset.value_or(0), e.line});
    }
    for (const QemuExtent& e : qemu_.extents) {
      qemu_rows.push_back(
          {e.path, static_cast<uint64_t>(e.sectors), static_cast<uint64_t>(e.offset), e.last_line});
    }
    size_t n = std::max(spec_rows.size(), qemu_rows.size());
    for (size_t i = 0; i < n; ++i) {
      bool same = i < spec_rows.size() && i < qemu_rows.size() &&
                  spec_rows[i].path == qemu_rows[i].path &&
                  spec_rows[i].sectors == qemu_rows[i].sectors &&
                  spec_rows[i].offset == qemu_rows[i].offset;
      if (same) continue;
      size_t line = i < qemu_rows.size() ? qemu_rows[i].line : spec_rows[i].line;
      add("readings-differ", Severity::Error, line,
          fmt::format("QEMU's extent {} differs from what the VMware spec reads ({} extents vs "
                      "{})",
                      i, qemu_rows.size(), spec_rows.size()));
      return;
    }
  }

  std::string_view text_;
  std::string path_;
  LintOptions options_;
  QemuReading qemu_;
  SpecReading spec_;
  LintReport report_;
  std::map<std::string, std::pair<uint64_t, std::string>> file_sizes_;
};

}  // namespace

std::string_view severity_name(Severity severity) {
  return severity == Severity::Error ? "error" : "warning";
}

size_t LintReport::errors() const {
  return std::count_if(findings.begin(), findings.end(),
                       [](const Finding& f) { return f.severity == Severity::Error; });
}

size_t LintReport::warnings() const { return findings.size() - errors(); }

bool LintReport::has(std::string_view id) const {
  return std::any_of(findings.begin(), findings.end(),
                     [&](const Finding& f) { return f.id == id; });
}

std::vector<std::string> LintReport::ids() const {
  std::vector<std::string> out;
  for (const Finding& f : findings) out.push_back(f.id);
  return out;
}

LintReport lint_text(std::string_view text, const std::string& descriptor_path,
                     const LintOptions& options) {
  return Linter(text, descriptor_path, options).run();
}

LintReport lint_file(const std::string& path, const LintOptions& options) {
  std::string bytes;
  try {
    bytes = read_descriptor_bytes(path);
  } catch (const std::exception& error) {
    throw Error(with_context(fmt::format("cannot lint VMDK descriptor {}", path), error));
  }
  return lint_text(bytes, path, options);
}

nlohmann::json to_json(const LintReport& report) {
  nlohmann::json findings = nlohmann::json::array();
  for (const Finding& f : report.findings) {
    findings.push_back({{"id", f.id},
                        {"severity", severity_name(f.severity)},
                        {"line", f.line},
                        {"message", f.message}});
  }
  return {{"file", report.path},
          {"errors", report.errors()},
          {"warnings", report.warnings()},
          {"findings", std::move(findings)}};
}

std::string format_text(const LintReport& report) {
  std::string out;
  for (const Finding& f : report.findings) {
    out += fmt::format("{}:{}: {}: {} [{}]\n", report.path, f.line, severity_name(f.severity),
                       f.message, f.id);
  }
  return out;
}

}  // namespace evmdk::vmdk
