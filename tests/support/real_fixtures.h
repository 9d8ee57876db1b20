#pragma once
// The outputs of real tools kept in tests/data/fixtures/ (its README says how each was made):
// containerd 2.2.4 tar-index layers and mount lists, containerd 2.1.5 mount lists, and
// erofs-utils 1.8.10's rebuild-mode fsmeta with its own --vmdk-desc descriptor. Tests read
// them from the source tree, never from ../shared.
#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "test_support.h"

namespace evmdk::test {

inline std::string fixtures_dir() { return source_dir() + "/tests/data/fixtures"; }

// containerd 2.2.4, differ with enable_tar_index = true: snapshots/N/layer.erofs, N = 1 (the
// base) .. 4 (the top). Each is a 512-byte-block index with the layer's tar appended, and one
// device-table entry (empty tag) mapped inside the same file.
inline std::string tarindex_layer(int n) {
  return fixtures_dir() + "/containerd-2.2.4/tarindex/snapshots/" + std::to_string(n) +
         "/layer.erofs";
}
inline constexpr int kTarIndexLayers = 4;

// Mount lists: containerd-2.2.4/lists/<name>.json and containerd-2.1.5/<name>.json.
inline std::string containerd22_list(const std::string& name) {
  return fixtures_dir() + "/containerd-2.2.4/lists/" + name + ".json";
}
inline std::string containerd21_list(const std::string& name) {
  return fixtures_dir() + "/containerd-2.1.5/" + name + ".json";
}

// Every list of a fixture directory, by name (file stem), sorted.
inline std::vector<std::string> fixture_list_names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A fixture list with @SNAPSHOTS@ (containerd's snapshots directory) replaced by `snapshots`.
inline std::string read_fixture_list(const std::string& path, const std::string& snapshots) {
  std::string text = read_file(path);
  const std::string placeholder = "@SNAPSHOTS@";
  for (size_t pos = 0; (pos = text.find(placeholder, pos)) != std::string::npos;
       pos += snapshots.size()) {
    text.replace(pos, placeholder.size(), snapshots);
  }
  return text;
}

// What the four tar-index layers show merged, top (4) first: path -> contents, and paths the
// upper layers' whiteouts (and layer 3's opaque directory) hide.
inline const std::map<std::string, std::string>& tarindex_merged_files() {
  static const std::map<std::string, std::string> files{
      {"etc/hostname", "top\n"},                                      // 4 over 2 over 1
      {"data/b.txt", "b-modified-in-l2\n"},                           // 3 over 1
      {"del/stays.txt", "stays\n"},                                   // 1
      {"opaque/new1", "new in opaque\n"},                             // 3 (opaque over 1's)
      {"bin/hello", "#!/bin/sh\necho hello\n"},                       // 1
      {"deep/d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/leaf", "leaf\n"},  // 4
  };
  return files;
}
inline const std::vector<std::string>& tarindex_hidden_paths() {
  static const std::vector<std::string> paths{"del/gone.txt", "etc/only-l0", "gonedir",
                                              "opaque/keep1", "opaque/sub"};
  return paths;
}
// SHA-256 of files big enough to span many tar blocks (read through the device mapping).
inline const std::map<std::string, std::string>& tarindex_file_digests() {
  static const std::map<std::string, std::string> digests{
      {"big.bin", "73ebf14290b3e7df859910a033d20cf8fc24306527e754f96d872c3f4cb2da1c"},  // 1
      {"mid.bin", "3bc630825a4f2c6e349bf132ca28c79ac1544e37723ebc2c4a075ed4cdbaf776"},  // 2
  };
  return digests;
}

// erofs-utils 1.8.10 (rebuild mode): erofs-utils-1.8.10/{fsmeta,top,middle,base}.erofs and
// merged.vmdk, its own flat descriptor over them (relative extent names).
inline std::string erofs_utils_dir() { return fixtures_dir() + "/erofs-utils-1.8.10"; }
inline const std::vector<std::string>& erofs_utils_flat_files() {
  static const std::vector<std::string> names{"fsmeta.erofs", "top.erofs", "middle.erofs",
                                              "base.erofs"};
  return names;
}
// Copies the fsmeta, its three layers and merged.vmdk into `dir` (so the descriptor's relative
// names resolve there); returns the fsmeta first, then the layers in device order.
inline std::vector<std::string> copy_erofs_utils_flat(const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::vector<std::string> copied;
  for (const auto& name : erofs_utils_flat_files()) {
    std::filesystem::copy_file(erofs_utils_dir() + "/" + name, dir + "/" + name);
    copied.push_back(dir + "/" + name);
  }
  std::filesystem::copy_file(erofs_utils_dir() + "/merged.vmdk", dir + "/merged.vmdk");
  return copied;
}
// The tree the fsmeta shows (mkfs.erofs 1.8.10 merged the three layers' directories).
inline const std::map<std::string, std::string>& erofs_utils_fsmeta_files() {
  static const std::map<std::string, std::string> files{
      {"etc/motd", "base layer greeting\n"},
      {"etc/os-release", "NAME=\"erofs-vmdk example base\"\n"},
      {"opt/app/legacy.conf", "old config from base\n"},
      {"opt/app/tool", "middle layer tool\n"},
      {"opt/app/version", "v1\n"},
      {"opt/app/config/app.conf", "setting=1\n"},
      {"usr/share/doc/app/README", "documentation shipped in the base layer\n"},
  };
  return files;
}

}  // namespace evmdk::test
