// libFuzzer target for a containerd mount list -> the hook's plan (host/hook_plan.h), templates
// included, and for the one template parser (common/contract/mount_template.h) that the plan
// and the guest share. Runs under -rss_limit_mb=64 / -malloc_limit_mb=64 (see .options): no
// template may make anything build a list the size of its numbers. Modes, by the first byte:
//  'T': the rest is a templated text; the byte after 'T' is the mount count;
//  else: the whole input is a mount list (JSON).
// Whatever the plan accepts, its guest templates must parse canonically against the guest's
// mounts (the upper is {{ mount 0 }}, lowers 1..N), as the guest will parse them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"
#include "evmdk/guest/bind_source.h"
#include "evmdk/guest/mkdir_directive.h"
#include "evmdk/host/hook/hook_plan.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace contract = evmdk::contract;

void fuzz_templates(std::string_view text, size_t mount_count) {
  try {
    auto pieces = contract::parse_templates(text, mount_count, "fuzz");
    for (const auto& piece : pieces) {
      if (!piece.templ) continue;
      const auto& t = *piece.templ;
      check(t.first < mount_count && t.last < mount_count, "indices below the mount count");
      check(t.count() <= mount_count, "a range never covers more than the list");
      check(t.at(t.count() - 1) == t.last, "a range ends at its last index");
      auto again = contract::parse_templates(t.render(), mount_count, "fuzz",
                                             contract::TemplateSyntax::Canonical);
      check(again.size() == 1 && again[0].templ == t, "render() parses back canonically");
    }
  } catch (const evmdk::Error&) {
  }
  // The guest's two users of the parser.
  try {
    auto bind = evmdk::guest::parse_bind_source(std::string(text), mount_count);
    check(bind.mount_index < mount_count, "bind source index bounded");
  } catch (const evmdk::Error&) {
  }
  try {
    auto mkdir = evmdk::guest::parse_mkdir_directive(std::string(text), mount_count);
    check(mkdir.mount_index < mount_count, "mkdir index bounded");
  } catch (const evmdk::Error&) {
  }
  // The host's renumbering with a partial map (odd mounts invisible to the guest).
  evmdk::host::TemplateMap map;
  for (size_t i = 0; i < mount_count; ++i) {
    map.guest_index_of.push_back(i % 2 == 0 ? std::optional<size_t>(i / 2) : std::nullopt);
  }
  try {
    (void)evmdk::host::renumber_templates(std::string(text), map, "fuzz");
  } catch (const evmdk::Error&) {
  }
}

void check_guest_template(const std::string& text, size_t guest_mounts) {
  if (text.empty()) return;
  try {
    (void)contract::parse_templates(text, guest_mounts, "guest", contract::TemplateSyntax::Canonical);
  } catch (const evmdk::Error& error) {
    std::fprintf(stderr, "%s\n", error.what());
    check(false, "the plan's guest templates parse canonically against the guest's mounts");
  }
}

void fuzz_plan(std::string_view text) {
  evmdk::host::HookPlan plan;
  try {
    plan = evmdk::host::plan_mounts(evmdk::host::parse_mount_list_text(text, "fuzz"));
  } catch (const evmdk::Error&) {
    return;
  }
  const size_t guest_mounts = plan.lowers.size() + 1;
  // Every lower names its image, or (containerd 2.1) the absolute host directory the hook maps
  // to its image through the mount table -- never both, never neither.
  for (const auto& lower : plan.lowers) {
    check(lower.image.empty() != lower.host_directory.empty(),
          "every lower has an image or a host directory");
    check(lower.host_directory.empty() ||
              (lower.host_directory.front() == '/' &&
               lower.host_directory.find_first_of(":\\") == std::string::npos),
          "a host lowerdir is one absolute path");
  }
  // A read-only upper is only ever behind a read-only bind.
  if (plan.upper && plan.upper->read_only) {
    check(plan.rootfs == evmdk::host::RootfsKind::Bind && plan.read_only,
          "a read-only upper is bound read-only");
  }
  check_guest_template(plan.guest_lowerdir, guest_mounts);
  check_guest_template(plan.guest_upperdir, guest_mounts);
  check_guest_template(plan.guest_workdir, guest_mounts);
  check_guest_template(plan.bind_source, guest_mounts);
  for (const auto& spec : plan.mkdir_specs) check_guest_template(spec, guest_mounts);
  for (const auto& option : plan.overlay_options) check_guest_template(option, guest_mounts);
  for (const auto& option : plan.bind_options) check_guest_template(option, guest_mounts);
  if (plan.rootfs == evmdk::host::RootfsKind::Bind) {
    try {
      (void)evmdk::guest::parse_bind_source(plan.bind_source, guest_mounts);
    } catch (const evmdk::Error& error) {
      std::fprintf(stderr, "%s\n", error.what());
      check(false, "the guest accepts the plan's bind source");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (size >= 2 && data[0] == 'T') {
    fuzz_templates(input.substr(2), data[1]);
  } else {
    fuzz_plan(input);
  }
  return 0;
}
