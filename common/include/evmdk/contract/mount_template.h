#pragma once
// The one parser of containerd's mount templates, `{{ mount N }}` and `{{ overlay A B }}`, for
// the host's hook planner and the guest's bind source and mkdir directives. Mount lists come
// from image content and snapshotter state, so every index is checked against the number of
// mounts in the list before anything is built from it, arithmetic is overflow-checked, and an
// overlay range is never expanded into a list: callers walk it with count()/at().
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::contract {

// {{ mount N }} (first == last) or {{ overlay A B }}: mounts A..B inclusive, in that order
// (A > B walks downwards).
struct MountTemplate {
  bool overlay = false;
  size_t first = 0;
  size_t last = 0;

  // Number of mounts covered (at least 1; never more than the list's size once parsed).
  size_t count() const;
  // The i-th mount in template order; i < count().
  size_t at(size_t i) const;
  // Canonical text: "{{ mount N }}" or "{{ overlay A B }}".
  std::string render() const;
  bool operator==(const MountTemplate&) const = default;
};

// One piece of a templated text: a literal run, or a template.
struct TemplatePiece {
  std::string literal;
  std::optional<MountTemplate> templ;
};

enum class TemplateSyntax {
  Lenient,   // containerd's: any run of spaces around and between the words ("{{mount 1}}")
  Canonical  // what the host emits for the guest: exactly "{{ mount N }}" / "{{ overlay A B }}"
};

// Parses every template in `text`. Each index must be below `mount_count` (the list's size).
// Errors read "<context>: template '<template>' in '<text>': <why>", so with a context such as
// "mount 3 (type 'overlay') option 'uidmap=...'" they name the mount, the option and the
// template. Throws evmdk::Error for an unterminated or unknown template, a number that is not
// a plain decimal, or an index out of range.
std::vector<TemplatePiece> parse_templates(std::string_view text, size_t mount_count,
                                           std::string_view context,
                                           TemplateSyntax syntax = TemplateSyntax::Lenient);

// A text that must start with exactly one `{{ mount N }}` (no other template anywhere); returns
// N and the literal text after it. Errors as above; also refuses {{ overlay }} and a text that
// does not start with a template.
struct LeadingMount {
  size_t index = 0;
  std::string rest;
};
LeadingMount parse_leading_mount(std::string_view text, size_t mount_count,
                                 std::string_view context,
                                 TemplateSyntax syntax = TemplateSyntax::Lenient);

}  // namespace evmdk::contract
