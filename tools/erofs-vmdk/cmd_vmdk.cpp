// erofs-vmdk lint FILE [--json] and erofs-vmdk map FILE [--json] [--at OFFSET].
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "evmdk/error.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/lint.h"

namespace evmdk::cli {
namespace {

// Paths in a descriptor need not be UTF-8; never let that abort the output.
std::string dump(const nlohmann::json& json) {
  return json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

nlohmann::json extent_json(const vmdk::MappedExtent& extent) {
  return {{"start", extent.virtual_offset},
          {"length", extent.length},
          {"path", extent.path},
          {"offset", extent.file_offset},
          {"line", extent.line}};
}

void register_lint(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "lint",
      "Check a VMDK descriptor for everything QEMU reads differently from the VMware "
      "spec, or would fail on; exits 1 when there are errors");
  auto file = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("FILE", *file, "VMDK descriptor")->required();
  cmd->add_flag("--json", *json, "Print the findings as JSON");
  auto quiet = add_quiet_flag(cmd);
  cmd->callback([file, json, quiet] {
    vmdk::LintReport report = vmdk::lint_file(*file);
    if (*quiet) {
      // the exit status alone
    } else if (*json) {
      fmt::print("{}", dump(vmdk::to_json(report)));
    } else if (report.findings.empty()) {
      fmt::print("{}: no findings\n", *file);
    } else {
      fmt::print("{}", vmdk::format_text(report));
      fmt::print("{}: {} error(s), {} warning(s)\n", *file, report.errors(), report.warnings());
    }
    std::fflush(stdout);
    if (report.errors() > 0) throw CLI::RuntimeError(1);
  });
}

void register_map(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "map", "Print the disk layout as QEMU will see it: virtual offset -> file and offset");
  auto file = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto at = std::make_shared<uint64_t>(0);
  cmd->add_option("FILE", *file, "VMDK descriptor")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  auto* at_option = cmd->add_option("--at", *at, "Only show where this virtual byte offset lands");
  cmd->callback([file, json, at, at_option] {
    vmdk::ExtentMap map = vmdk::ExtentMap::from_file(*file);
    // The layout is QEMU's; say so when it is not what the text seems to say.
    if (size_t errors = vmdk::lint_file(*file).errors(); errors > 0) {
      fmt::print(stderr,
                 "erofs-vmdk: note: {} has {} lint error(s); this is the layout QEMU uses, which "
                 "differs from what the descriptor appears to say (run erofs-vmdk lint {})\n",
                 *file, errors, *file);
    }
    if (at_option->count() > 0) {
      auto location = map.find(*at);
      if (!location) {
        throw Error("{}: offset {} is past the end of the {}-byte disk", *file, *at,
                    map.virtual_size());
      }
      if (*json) {
        nlohmann::json out = extent_json(*location->extent);
        out["index"] = location->index;
        out["virtual_offset"] = *at;
        out["file_offset"] = location->file_offset;
        out["bytes_left"] = location->bytes_left;
        fmt::print("{}", dump(out));
      } else {
        fmt::print("{} -> {} @ {} (extent {}, line {}, {} bytes left in extent)\n", *at,
                   location->extent->path, location->file_offset, location->index,
                   location->extent->line, location->bytes_left);
      }
      return;
    }
    if (*json) {
      nlohmann::json extents = nlohmann::json::array();
      for (const auto& extent : map.extents()) extents.push_back(extent_json(extent));
      fmt::print("{}", dump({{"file", *file},
                             {"virtual_size", map.virtual_size()},
                             {"extents", std::move(extents)}}));
      return;
    }
    fmt::print("{:>16} {:>16} {:>16} {:>6}  {}\n", "start", "length", "offset", "line", "file");
    for (const auto& extent : map.extents()) {
      fmt::print("{:>16} {:>16} {:>16} {:>6}  {}\n", extent.virtual_offset, extent.length,
                 extent.file_offset, extent.line, extent.path);
    }
    fmt::print("virtual size: {} bytes in {} extents\n", map.virtual_size(), map.extents().size());
  });
}

}  // namespace

void register_vmdk_commands(CLI::App& app) {
  register_lint(app);
  register_map(app);
}

}  // namespace evmdk::cli
