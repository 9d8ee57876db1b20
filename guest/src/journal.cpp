#include "evmdk/guest/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "evmdk/atomic_file.h"
#include "evmdk/error.h"

namespace evmdk::guest {

std::string journal_path(const std::string& base_dir, const std::string& container_id) {
  return base_dir + "/" + container_id + ".journal.json";
}

nlohmann::json to_json(const Journal& journal) {
  auto loops = nlohmann::json::array();
  for (const auto& loop : journal.loops) {
    loops.push_back({{"device", loop.device}, {"backing", loop.backing}, {"offset", loop.offset}});
  }
  return {{"version", 1},
          {"container_id", journal.container_id},
          {"base_dir", journal.base_dir},
          {"rootfs", journal.rootfs},
          {"phase", journal.phase},
          {"created_dirs", journal.created_dirs},
          {"mounts", journal.mounts},
          {"loops", loops},
          {"verity_devices", journal.verity_devices}};
}

void save_journal(const Journal& journal) {
  write_file_atomic(journal_path(journal.base_dir, journal.container_id),
                    to_json(journal).dump(1) + "\n", 0600);
}

std::optional<Journal> load_journal(const std::string& base_dir, const std::string& container_id) {
  std::string path = journal_path(base_dir, container_id);
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("cannot read journal {}", path);
  }
  try {
    auto json = nlohmann::json::parse(in);
    Journal journal;
    journal.container_id = json.at("container_id").get<std::string>();
    journal.base_dir = json.at("base_dir").get<std::string>();
    journal.rootfs = json.at("rootfs").get<std::string>();
    journal.phase = json.at("phase").get<std::string>();
    journal.created_dirs = json.at("created_dirs").get<std::vector<std::string>>();
    journal.mounts = json.at("mounts").get<std::vector<std::string>>();
    for (const auto& loop : json.at("loops")) {
      journal.loops.push_back({loop.at("device").get<std::string>(),
                               loop.at("backing").get<std::string>(),
                               loop.at("offset").get<uint64_t>()});
    }
    journal.verity_devices = json.value("verity_devices", std::vector<std::string>{});
    return journal;
  } catch (const nlohmann::json::exception& error) {
    throw Error("journal {} is corrupt: {}", path, error.what());
  }
}

void remove_journal(const std::string& base_dir, const std::string& container_id) {
  std::string path = journal_path(base_dir, container_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove journal {}", path);
  fsync_directory(base_dir);
}

}  // namespace evmdk::guest
