#include "evmdk/guest/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace fs = std::filesystem;

namespace evmdk::guest {
namespace {

using Clock = std::chrono::steady_clock;

bool write_control(const fs::path& file, const std::string& value) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return false;
  return ::write(fd.get(), value.data(), value.size()) == static_cast<ssize_t>(value.size());
}

bool path_exists(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Every cgroup directory below `cgroup`, deepest first, then `cgroup` itself.
std::vector<fs::path> leaves_first(const fs::path& cgroup) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cgroup, ec)) {
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) {
      auto below = leaves_first(entry.path());
      out.insert(out.end(), below.begin(), below.end());
    }
  }
  out.push_back(cgroup);
  return out;
}

void set_frozen(const std::vector<std::string>& cgroups, bool frozen) {
  for (const auto& cgroup : cgroups) {
    if (path_exists(fs::path(cgroup) / "cgroup.freeze")) {
      write_control(fs::path(cgroup) / "cgroup.freeze", frozen ? "1" : "0");
    } else if (path_exists(fs::path(cgroup) / "freezer.state")) {
      write_control(fs::path(cgroup) / "freezer.state", frozen ? "FROZEN" : "THAWED");
    }
  }
}

}  // namespace

std::vector<int> cgroup_pids(const std::string& cgroup) {
  std::vector<int> pids;
  if (!path_exists(cgroup)) return pids;
  for (const auto& dir : leaves_first(cgroup)) {
    std::ifstream in(dir / "cgroup.procs");
    int pid = 0;
    while (in >> pid) pids.push_back(pid);
  }
  return pids;
}

std::vector<std::string> kill_cgroup_processes(const std::vector<std::string>& cgroups,
                                               std::chrono::milliseconds timeout) {
  std::vector<std::string> problems;
  auto deadline = Clock::now() + timeout;
  auto all_empty = [&] {
    for (const auto& cgroup : cgroups) {
      if (!cgroup_pids(cgroup).empty()) return false;
    }
    return true;
  };
  // cgroup v2: one write kills the whole subtree, forkers included.
  for (const auto& cgroup : cgroups) {
    if (path_exists(fs::path(cgroup) / "cgroup.kill"))
      write_control(fs::path(cgroup) / "cgroup.kill", "1");
  }
  while (!all_empty()) {
    if (Clock::now() >= deadline) {
      std::string left;
      for (const auto& cgroup : cgroups) {
        for (int pid : cgroup_pids(cgroup)) left += fmt::format(" {}", pid);
      }
      set_frozen(cgroups, false);
      problems.push_back(
          fmt::format("processes still alive after {} ms:{}", timeout.count(), left));
      return problems;
    }
    // Frozen, a forker cannot add children between reading the pids and killing them.
    set_frozen(cgroups, true);
    for (const auto& cgroup : cgroups) {
      for (int pid : cgroup_pids(cgroup)) {
        if (pid > 0) ::kill(pid, SIGKILL);
      }
    }
    // v1-frozen tasks only act on SIGKILL once thawed.
    set_frozen(cgroups, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return problems;
}

std::vector<std::string> remove_cgroups(const std::vector<std::string>& cgroups,
                                        std::chrono::milliseconds timeout) {
  std::vector<std::string> problems;
  auto deadline = Clock::now() + timeout;
  for (const auto& cgroup : cgroups) {
    if (!path_exists(cgroup)) continue;
    for (const auto& dir : leaves_first(cgroup)) {
      while (::rmdir(dir.c_str()) != 0) {
        if (errno == ENOENT) break;
        if (errno == EBUSY && Clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        problems.push_back(
            fmt::format("cgroup {} not removed: {}", dir.string(), std::strerror(errno)));
        break;
      }
    }
  }
  return problems;
}

}  // namespace evmdk::guest
