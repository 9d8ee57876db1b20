#include "evmdk/contract/mount_template.h"

#include <fmt/format.h>

#include <charconv>

#include "evmdk/checked_math.h"
#include "evmdk/error.h"

namespace evmdk::contract {
namespace {

constexpr std::string_view kOpen = "{{";
constexpr std::string_view kClose = "}}";

[[noreturn]] void refuse(std::string_view context, std::string_view text, std::string_view templ,
                         std::string_view why) {
  if (templ.empty()) throw Error("{}: '{}': {}", context, text, why);
  throw Error("{}: template '{}' in '{}': {}", context, templ, text, why);
}

// Splits the body between "{{" and "}}" into words. Canonical syntax: one space before each
// word and one after the last, nothing else.
std::optional<std::vector<std::string_view>> words_of(std::string_view body,
                                                      TemplateSyntax syntax) {
  std::vector<std::string_view> words;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t start = body.find_first_not_of(' ', pos);
    if (start == std::string_view::npos) break;
    if (syntax == TemplateSyntax::Canonical && start != pos + 1) return std::nullopt;
    size_t end = body.find(' ', start);
    if (end == std::string_view::npos) end = body.size();
    words.push_back(body.substr(start, end - start));
    if (words.size() > 3) return std::nullopt;  // no template has more; stop early
    pos = end;
  }
  if (syntax == TemplateSyntax::Canonical &&
      (body.empty() || body.back() != ' ' || (body.size() >= 2 && body[body.size() - 2] == ' '))) {
    return std::nullopt;
  }
  return words;
}

MountTemplate parse_one(std::string_view templ, std::string_view text, size_t mount_count,
                        std::string_view context, TemplateSyntax syntax) {
  std::string_view body = templ.substr(kOpen.size(), templ.size() - kOpen.size() - kClose.size());
  auto words = words_of(body, syntax);
  auto unknown = [&]() {
    refuse(context, text, templ, "unknown template (only {{ mount N }} and {{ overlay A B }})");
  };
  if (!words || words->empty()) unknown();
  const auto& w = *words;
  MountTemplate out;
  if (w[0] == "mount" && w.size() == 2) {
    out.overlay = false;
  } else if (w[0] == "overlay" && w.size() == 3) {
    out.overlay = true;
  } else {
    unknown();
  }
  auto index = [&](std::string_view word) -> size_t {
    auto value = parse_decimal<size_t>(word);
    if (!value) {
      refuse(context, text, templ, fmt::format("'{}' is not a number (a mount index)", word));
    }
    if (*value >= mount_count) {
      refuse(
          context, text, templ,
          mount_count == 0
              ? fmt::format("refers to mount {}, which does not exist (the list is empty)", *value)
              : fmt::format(
                    "refers to mount {}, which does not exist (the list has {} mounts, 0..{})",
                    *value, mount_count, mount_count - 1));
    }
    return *value;
  };
  out.first = index(w[1]);
  out.last = out.overlay ? index(w[2]) : out.first;
  return out;
}

}  // namespace

size_t MountTemplate::count() const { return (first <= last ? last - first : first - last) + 1; }

size_t MountTemplate::at(size_t i) const { return first <= last ? first + i : first - i; }

std::string MountTemplate::render() const {
  if (overlay) return fmt::format("{{{{ overlay {} {} }}}}", first, last);
  return fmt::format("{{{{ mount {} }}}}", first);
}

std::vector<TemplatePiece> parse_templates(std::string_view text, size_t mount_count,
                                           std::string_view context, TemplateSyntax syntax) {
  std::vector<TemplatePiece> pieces;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) {
      pieces.push_back({std::string(text.substr(pos)), std::nullopt});
      break;
    }
    if (open > pos) pieces.push_back({std::string(text.substr(pos, open - pos)), std::nullopt});
    size_t close = text.find(kClose, open + kOpen.size());
    if (close == std::string_view::npos) {
      refuse(context, text, text.substr(open), "unterminated template (no '}}')");
    }
    std::string_view templ = text.substr(open, close + kClose.size() - open);
    pieces.push_back({{}, parse_one(templ, text, mount_count, context, syntax)});
    pos = close + kClose.size();
  }
  return pieces;
}

LeadingMount parse_leading_mount(std::string_view text, size_t mount_count,
                                 std::string_view context, TemplateSyntax syntax) {
  if (text.substr(0, kOpen.size()) != kOpen) {
    refuse(context, text, {}, "not a '{{ mount N }}' template (it must start with one)");
  }
  auto pieces = parse_templates(text, mount_count, context, syntax);
  const MountTemplate& templ = *pieces.front().templ;
  if (templ.overlay) {
    refuse(context, text, templ.render(), "an overlay range is not a '{{ mount N }}' template");
  }
  LeadingMount out;
  out.index = templ.first;
  for (size_t i = 1; i < pieces.size(); ++i) {
    if (pieces[i].templ) {
      refuse(context, text, pieces[i].templ->render(), "only one template is allowed here");
    }
    out.rest += pieces[i].literal;
  }
  return out;
}

namespace {

// "/a//b/./c" -> "a/b/c"; nullopt when a component is "..".
std::optional<std::string> normalise_below(std::string_view path) {
  std::string out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view component = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component == "..") return std::nullopt;
    if (!component.empty() && component != ".") {
      if (!out.empty()) out += '/';
      out += component;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

}  // namespace

BindSpec parse_bind_spec(std::string_view spec, size_t mount_count) {
  auto refuse = [&](std::string_view why) {
    return Error(
        "rootfs bind source '{}': {} (only '{{{{ mount N }}}}' or "
        "'{{{{ mount 0 }}}}/<path inside the upper>' are accepted)",
        spec, why);
  };
  if (auto nul = spec.find('\0'); nul != std::string_view::npos) {
    // Quoted only up to the NUL: an error message is a C string.
    throw Error("rootfs bind source '{}\\0...': NUL byte in the template", spec.substr(0, nul));
  }
  auto lead =
      parse_leading_mount(spec, mount_count, "rootfs bind source", TemplateSyntax::Canonical);
  BindSpec out;
  out.mount_index = lead.index;
  if (lead.rest.empty()) return out;
  if (out.mount_index != 0) throw refuse("a path is only allowed below the upper, {{ mount 0 }}");
  if (lead.rest[0] != '/') throw refuse("expected '/' after the template");
  auto path = normalise_below(lead.rest);
  if (!path) throw refuse("'..' is not allowed");
  if (path->empty()) throw refuse("the path names the upper's root; use '{{ mount 0 }}' alone");
  out.path = std::move(*path);
  return out;
}

MkdirSpec parse_mkdir_spec(std::string_view spec, size_t mount_count) {
  auto lead = parse_leading_mount(spec, mount_count, "mkdir directive", TemplateSyntax::Canonical);
  MkdirSpec out;
  out.mount_index = lead.index;
  std::vector<std::string_view> fields;
  std::string_view rest = lead.rest;
  for (size_t start = 0;;) {
    size_t colon = rest.find(':', start);
    fields.push_back(rest.substr(
        start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos || fields.size() > 4) break;
    start = colon + 1;
  }
  if (fields.size() != 2 && fields.size() != 4) {
    throw Error("mkdir directive '{}': expected {{{{ mount N }}}}/path:mode[:uid:gid]", spec);
  }
  if (fields[0].empty() || fields[0][0] != '/') {
    throw Error("mkdir directive '{}': path must start with '/' after the template", spec);
  }
  auto path = normalise_below(fields[0]);
  if (!path) throw Error("mkdir directive '{}': '..' is not allowed", spec);
  if (path->empty()) throw Error("mkdir directive '{}': names the mount root itself", spec);
  out.path = std::move(*path);
  uint32_t mode = 0;
  auto [end, ec] = std::from_chars(fields[1].data(), fields[1].data() + fields[1].size(), mode, 8);
  if (fields[1].empty() || ec != std::errc() || end != fields[1].data() + fields[1].size() ||
      mode > 07777) {
    throw Error("mkdir directive '{}': mode '{}' is not an octal mode", spec, fields[1]);
  }
  out.mode = mode;
  if (fields.size() == 4) {
    out.uid = parse_decimal<uint32_t>(fields[2]);
    out.gid = parse_decimal<uint32_t>(fields[3]);
    if (!out.uid || !out.gid) throw Error("mkdir directive '{}': uid/gid must be numbers", spec);
  }
  return out;
}

}  // namespace evmdk::contract
