#pragma once
// The descriptor linter: every place where QEMU's reading and the VMware spec's reading of a
// descriptor differ, or where QEMU would fail, as a named finding with a line number.
//
// Finding ids (stable; tests and scripts match on them):
//   errors:   rdonly-extent, noaccess-extent, zero-extent, blank-before-extent, wrong-case,
//             unquoted-name, single-quoted-name, hex-offset, hex-sectors, non-positive-sectors,
//             path-too-long, unsupported-extent-type, create-type-spacing,
//             missing-create-type, unsupported-create-type, early-create-type-substring,
//             missing-cid, early-cid-substring, unreadable-cid, parent-file-name-hint,
//             descriptor-too-large, nul-byte, no-usable-extent, size-overflow,
//             missing-extent-file, extent-past-eof, qemu-open-error, readings-differ,
//             not-a-descriptor
//   warnings: relative-path, extent-count-fd-limit, virtualbox-line-limit,
//             extent-trailing-text, non-flat-create-type, extent-over-2gib, unknown-line
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::vmdk {

enum class Severity { Warning, Error };
std::string_view severity_name(Severity severity);  // "warning" / "error"

struct Finding {
  std::string id;
  Severity severity = Severity::Error;
  size_t line = 0;  // 1-based; 0 when the finding is about the whole descriptor
  std::string message;

  bool operator==(const Finding&) const = default;
};

struct LintOptions {
  // Open every extent file QEMU would open to check it exists and is long enough.
  bool check_files = true;
};

struct LintReport {
  std::string path;
  std::vector<Finding> findings;  // sorted by line

  size_t errors() const;
  size_t warnings() const;
  bool has(std::string_view id) const;
  std::vector<std::string> ids() const;
};

// descriptor_path is what QEMU would be given (relative extent names resolve against it).
LintReport lint_text(std::string_view text, const std::string& descriptor_path,
                     const LintOptions& options = {});
// Reads the file (throws evmdk::Error naming it if it cannot be read) and lints it.
LintReport lint_file(const std::string& path, const LintOptions& options = {});

// {"file": ..., "errors": N, "warnings": N, "findings": [{"id", "severity", "line", "message"}]}
nlohmann::json to_json(const LintReport& report);
// One line per finding: "FILE:LINE: error: message [id]".
std::string format_text(const LintReport& report);

}  // namespace evmdk::vmdk
