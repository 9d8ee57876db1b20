#pragma once
// The hook's golden files (tests/host/golden/hook/): what the hook prints for a mount list,
// reduced to what a runtime and the guest act on, with the per-run work directory replaced by
// @WORK@ -- or, for a list the hook refuses, its error message. EVMDK_UPDATE_GOLDEN=1 rewrites
// the golden files instead of comparing.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "real_fixtures.h"
#include "test_support.h"

namespace evmdk::test {

inline std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size()) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

// What a golden file pins down: the disks to attach and the guest storages (paths relative to
// the work dir), the rootfs description, shares and notes.
inline nlohmann::json project_hook_output(const nlohmann::json& output, const std::string& work) {
  nlohmann::json disks = nlohmann::json::array();
  for (const auto& disk : output["disks"]) {
    disks.push_back({{"role", disk["role"]},
                     {"path", disk["path"]},
                     {"format", disk["format"]},
                     {"read_only", disk["read_only"]},
                     {"serial", disk["serial"]},
                     {"created", disk["created"]},
                     {"blockdev-add", disk["qemu"]["blockdev-add"]},
                     {"device_add", disk["qemu"]["device_add"]}});
  }
  nlohmann::json projected{{"disks", disks},
                           {"storages", output["storages"]},
                           {"rootfs", output["rootfs"]},
                           {"shares", output["shares"]},
                           {"notes", output["notes"]},
                           {"verity", output["verity"]}};
  return nlohmann::json::parse(replace_all(projected.dump(), work, "@WORK@"));
}

// A refused list's golden: the message, with the work directory replaced.
inline nlohmann::json project_hook_error(const std::string& message, const std::string& work) {
  return {{"error", replace_all(message, work, "@WORK@")}};
}

// Compares `actual` with tests/host/golden/hook/<name>.json (or rewrites it).
inline void expect_hook_golden(const std::string& name, const nlohmann::json& actual) {
  namespace fs = std::filesystem;
  std::string golden_path = source_dir() + "/tests/host/golden/hook/" + name + ".json";
  const char* update = std::getenv("EVMDK_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    fs::create_directories(fs::path(golden_path).parent_path());
    write_file(golden_path, actual.dump(2) + "\n");
    return;
  }
  ASSERT_TRUE(fs::exists(golden_path))
      << "missing golden file " << golden_path << " (run with EVMDK_UPDATE_GOLDEN=1)";
  nlohmann::json expected = nlohmann::json::parse(read_file(golden_path));
  EXPECT_EQ(actual, expected) << "golden " << name << " differs; actual:\n" << actual.dump(2);
}

// The snapshots directory a list expects: layers 1 (base) .. 4 (top), the directories of the
// active snapshots, and nothing for the rwlayer images (the hook creates them).
inline void make_fixture_snapshots(const std::string& snapshots, bool tar_index) {
  for (int n = 1; n <= kTarIndexLayers; ++n) {
    std::string dir = fmt::format("{}/{}", snapshots, n);
    std::filesystem::create_directories(dir);
    if (tar_index) {
      std::filesystem::copy_file(tarindex_layer(n), dir + "/layer.erofs");
      continue;
    }
    make_tree(dir + "/tree", {{"etc/hostname", fmt::format("layer {}\n", n)},
                              {fmt::format("layer-{}/file", n), "x\n"}});
    make_erofs(
        dir + "/tree", dir + "/layer.erofs",
        fmt::format("{0}{0}{0}{0}{0}{0}{0}{0}-{0}{0}{0}{0}-4{0}{0}{0}-8{0}{0}{0}-{0}{0}{0}{0}"
                    "{0}{0}{0}{0}{0}{0}{0}{0}",
                    n));
  }
  for (int n = 5; n <= 10; ++n) {
    std::filesystem::create_directories(fmt::format("{}/{}/fs", snapshots, n));
    std::filesystem::create_directories(fmt::format("{}/{}/work", snapshots, n));
  }
}

// Runs the hook on `list` (as container `id`, state under work/state) and projects what it
// printed, or its refusal; checks the disks it names exist and a refusal left nothing.
inline nlohmann::json hook_golden_of(const std::string& id, const std::string& list,
                                     const std::string& work) {
  namespace fs = std::filesystem;
  host::HookRequest request;
  request.id = id;
  request.state_dir = work + "/state";
  try {
    request.mounts = host::parse_mount_list_text(list, id);
    nlohmann::json output = host::run_hook(request);
    for (const auto& disk : output["disks"]) {
      EXPECT_TRUE(fs::exists(disk["path"].get<std::string>())) << disk.dump();
    }
    EXPECT_EQ(nlohmann::json::parse(read_file(output["dir"].get<std::string>() + "/storage.json")),
              output["storages"]);
    return project_hook_output(output, work);
  } catch (const Error& error) {
    EXPECT_FALSE(fs::exists(request.state_dir + "/" + id + "/hook.json"))
        << "a refusal left output";
    return project_hook_error(error.what(), work);
  }
}

// A gtest parameter name for a fixture list's file name (letters and digits only).
inline std::string fixture_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (auto& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace evmdk::test
