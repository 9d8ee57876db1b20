// The hook's state file (<state-dir>/<id>/hook-state.json) and `hook cleanup`, which removes
// exactly what a run recorded there.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "evmdk/contract/container_id.h"
#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/input_file.h"
#include "hook_files.h"

namespace evmdk::host {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_safe_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

namespace hook_detail {

HookState load_hook_state(const std::string& path) {
  return parse_hook_state(
      read_input_file(path, "hook state file", kMaxHookStateBytes, /*follow_symlinks=*/false),
      path);
}

}  // namespace hook_detail

using hook_detail::load_hook_state;

HookState parse_hook_state(std::string_view text, const std::string& path) {
  if (text.size() > kMaxHookStateBytes) {
    throw Error("hook state file {}: {} bytes, more than the {} allowed", path, text.size(),
                kMaxHookStateBytes);
  }
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception& error) {
    throw Error("hook state file {}: not valid JSON: {}", path, error.what());
  }
  if (!document.is_object()) throw Error("hook state file {}: expected a JSON object", path);
  auto field = [&](const char* name) -> const json* {
    auto found = document.find(name);
    return found == document.end() || found->is_null() ? nullptr : &*found;
  };
  auto string_field = [&](const char* name, bool required) -> std::string {
    const json* value = field(name);
    if (value == nullptr) {
      if (required) throw Error("hook state file {}: missing string field '{}'", path, name);
      return {};
    }
    if (!value->is_string())
      throw Error("hook state file {}: field '{}' must be a string", path, name);
    return value->get<std::string>();
  };
  auto names_field = [&](const char* name) {
    std::vector<std::string> out;
    const json* value = field(name);
    if (value == nullptr) return out;
    if (!value->is_array())
      throw Error("hook state file {}: field '{}' must be an array", path, name);
    for (const auto& item : *value) {
      if (!item.is_string()) {
        throw Error("hook state file {}: field '{}' must hold only strings", path, name);
      }
      out.push_back(item.get<std::string>());
    }
    return out;
  };
  HookState state;
  if (const json* version = field("version")) {
    if (!version->is_number_unsigned() || version->get<uint64_t>() != 1) {
      throw Error("hook state file {}: unsupported version {}", path, version->dump());
    }
  }
  state.id = string_field("id", true);
  state.status = string_field("status", true);
  if (state.status != "building" && state.status != "complete") {
    throw Error("hook state file {}: status '{}' is neither 'building' nor 'complete'", path,
                state.status);
  }
  state.input_sha256 = string_field("input_sha256", false);
  state.dirs = names_field("dirs");
  state.files = names_field("files");
  // "created_upper" (written by earlier versions) is not read: cleanup never removes the upper.
  return state;
}

nlohmann::json to_json(const HookState& state) {
  json out{{"version", state.version},
           {"id", state.id},
           {"status", state.status},
           {"input_sha256", state.input_sha256},
           {"dirs", state.dirs}};
  if (state.status == "complete") out["files"] = state.files;
  return out;
}

CleanupReport cleanup_hook(const std::string& id, const std::string& state_dir) {
  contract::validate_container_id(id);
  if (state_dir.empty()) throw Error("--state-dir is empty");
  const fs::path dir = fs::absolute(state_dir).lexically_normal() / id;
  CleanupReport report;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return report;  // nothing there: already clean
    throw_errno("cannot inspect {}", dir.string());
  }
  if (S_ISLNK(st.st_mode)) throw Error("{} is a symlink; refusing to clean it", dir.string());
  if (!S_ISDIR(st.st_mode))
    throw Error("{} is not a directory; refusing to clean it", dir.string());
  report.existed = true;

  const fs::path state_path = dir / kHookStateName;
  HookState state;
  if (::lstat(state_path.c_str(), &st) == 0) {
    state = load_hook_state(state_path.string());
    if (state.id != id) {
      throw Error("{} belongs to id '{}', not '{}'", state_path.string(), state.id, id);
    }
  } else {
    // No state file: the hook never got past creating the directory.
    state.status = "building";
  }
  auto remove_path = [&](const fs::path& path) {
    if (::unlink(path.c_str()) == 0) {
      report.removed.push_back(path.string());
    } else if (errno != ENOENT) {
      report.left.push_back(fmt::format("{}: {}", path.string(), std::strerror(errno)));
    }
  };
  auto checked_subdir = [&](const std::string& name) -> std::optional<fs::path> {
    if (!is_safe_name(name)) {
      report.left.push_back(
          fmt::format("{}: unsafe name '{}' in the state file", dir.string(), name));
      return std::nullopt;
    }
    fs::path sub = dir / name;
    struct stat sub_st {};
    if (::lstat(sub.c_str(), &sub_st) != 0) return std::nullopt;
    if (!S_ISDIR(sub_st.st_mode)) {
      report.left.push_back(fmt::format("{}: not a directory the hook made", sub.string()));
      return std::nullopt;
    }
    return sub;
  };

  const bool complete = state.status == "complete";
  const std::vector<std::string>& dirs = state.dirs;
  if (complete) {
    for (const std::string& relative : state.files) {
      if (relative == kHookStateName) continue;  // last, so an interrupted cleanup can resume
      auto slash = relative.find('/');
      if (slash == std::string::npos) {
        if (is_safe_name(relative)) remove_path(dir / relative);
      } else if (auto sub = checked_subdir(relative.substr(0, slash))) {
        std::string name = relative.substr(slash + 1);
        if (is_safe_name(name)) remove_path(*sub / name);
      }
    }
  } else {
    // Interrupted hook: its subdirectories were created fresh by it, so all they hold is
    // its own (possibly partial) compose output; also its staged temp files.
    for (const auto& name : dirs) {
      auto sub = checked_subdir(name);
      if (!sub) continue;
      for (const auto& entry : fs::directory_iterator(*sub)) {
        if (entry.is_symlink() || !entry.is_directory()) remove_path(entry.path());
      }
    }
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::string name = entry.path().filename().string();
      bool staged = name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos;
      bool ours = name == kHookOutputName || name == kHookStorageName;
      if ((staged || ours) && !entry.is_directory()) remove_path(entry.path());
    }
  }
  for (const auto& name : dirs) {
    if (!is_safe_name(name)) continue;
    fs::path sub = dir / name;
    if (::rmdir(sub.c_str()) == 0) {
      report.removed.push_back(sub.string());
    } else if (errno != ENOENT) {
      report.left.push_back(fmt::format("{}: {}", sub.string(), std::strerror(errno)));
    }
  }
  remove_path(state_path);
  if (::rmdir(dir.c_str()) == 0) {
    report.removed.push_back(dir.string());
  } else if (errno == ENOTEMPTY || errno == EEXIST) {
    report.kept.push_back(fmt::format("{}: holds files the hook did not create", dir.string()));
  } else if (errno != ENOENT) {
    report.left.push_back(fmt::format("{}: {}", dir.string(), std::strerror(errno)));
  }
  return report;
}

}  // namespace evmdk::host
