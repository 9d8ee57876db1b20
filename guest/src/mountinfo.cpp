#include "evmdk/guest/mountinfo.h"

#include <fstream>
#include <sstream>

#include "evmdk/error.h"

namespace evmdk::guest {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      int value = 0;
      bool octal = true;
      for (size_t k = 1; k <= 3; ++k) {
        char c = text[i + k];
        if (c < '0' || c > '7') octal = false;
        value = value * 8 + (c - '0');
      }
      if (octal) {
        out += static_cast<char>(value);
        i += 3;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

bool at_or_below(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

}  // namespace

std::vector<MountEntry> read_mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) throw Error("cannot read /proc/self/mountinfo (is /proc mounted?)");
  std::vector<MountEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    MountEntry entry;
    std::string devno, root, mount_point, field;
    fields >> entry.id >> entry.parent_id >> devno >> root >> mount_point;
    while (fields >> field && field != "-") {
    }
    fields >> entry.fstype >> entry.source;
    entry.mount_point = unescape(mount_point);
    entry.source = unescape(entry.source);
    out.push_back(std::move(entry));
  }
  return out;
}

std::vector<MountEntry> mounts_under(const std::string& dir) {
  std::vector<MountEntry> out;
  for (auto& entry : read_mountinfo()) {
    if (at_or_below(entry.mount_point, dir)) out.push_back(std::move(entry));
  }
  return out;
}

bool is_mount_point(const std::string& path) {
  for (const auto& entry : read_mountinfo()) {
    if (entry.mount_point == path) return true;
  }
  return false;
}

}  // namespace evmdk::guest
