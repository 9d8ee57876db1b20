#pragma once
// The one parser of containerd's mount templates, `{{ mount N }}` and `{{ overlay A B }}`, for
// the host's hook planner and the guest's bind source and mkdir directives. Mount lists come
// from image content and snapshotter state, so every index is checked against the number of
// mounts in the list before anything is built from it, arithmetic is overflow-checked, and an
// overlay range is never expanded into a list: callers walk it with count()/at().
#include <cstddef>
#include <cstdint>
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

// The two templated specs the host hands the guest, parsed here once so the hook refuses what
// the guest would (a plan the guest cannot mount must fail on the host, naming the mount).
// Both take canonical templates only and bound N by `mount_count` (the guest's mounts).

// A rootfs bind source (X-erofs-vmdk.rootfs-bind=): `{{ mount N }}` (the root of mount N) or
// `{{ mount 0 }}/relative/path` (a directory inside the upper; no "..", not the root itself).
// Throws evmdk::Error "rootfs bind source '<spec>': <why> (...)".
struct BindSpec {
  size_t mount_index = 0;
  std::string path;  // normalised, relative; empty = the mount's root
};
BindSpec parse_bind_spec(std::string_view spec, size_t mount_count);

// A mkdir directive (X-containerd.mkdir.path= / X-kata.mkdir.path=):
// `{{ mount N }}/path:mode[:uid:gid]`, mode octal <= 07777. Throws evmdk::Error
// "mkdir directive '<spec>': <why>".
struct MkdirSpec {
  size_t mount_index = 0;
  std::string path;  // normalised, relative, never empty
  uint32_t mode = 0755;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
};
MkdirSpec parse_mkdir_spec(std::string_view spec, size_t mount_count);

}  // namespace evmdk::contract
