#pragma once
// What a mount created, written atomically under the base directory before (for mounts) or
// right after (for directories and loop devices) each step, so a restarted agent's teardown
// can finish the job after a crash.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace evmdk::guest {

struct JournalLoop {
  std::string device;   // /dev/loopN
  std::string backing;  // what it maps
  uint64_t offset = 0;
};

struct Journal {
  std::string container_id;
  std::string base_dir;
  std::string rootfs;
  std::string phase;                      // mounting, mounted, tearing-down
  std::vector<std::string> created_dirs;  // in creation order; removed in reverse, if empty
  std::vector<std::string> mounts;        // mount points in mount order: lowers, upper, rootfs
  std::vector<JournalLoop> loops;
  std::vector<std::string> verity_devices;  // dm names
};

std::string journal_path(const std::string& base_dir, const std::string& container_id);
void save_journal(const Journal& journal);  // atomic
std::optional<Journal> load_journal(const std::string& base_dir, const std::string& container_id);
void remove_journal(const std::string& base_dir, const std::string& container_id);
nlohmann::json to_json(const Journal& journal);

}  // namespace evmdk::guest
