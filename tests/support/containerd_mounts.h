#pragma once
// Mount lists as containerd's EROFS snapshotter returns them (docs/runtime-integration.md), for tests that
// feed the hook the real shapes.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace evmdk::test {

// Block mode: mkfs/ext4 of the writable layer, the erofs parents (top first), and
// format/mkdir/overlay over them (`{{ mount 1 }}` for one parent, `{{ overlay 1 N }}` else).
inline nlohmann::json containerd_block_mode_list(const std::string& rwlayer, uint64_t rwlayer_bytes,
                                                 const std::vector<std::string>& layers) {
  nlohmann::json list = nlohmann::json::array();
  list.push_back({{"type", "mkfs/ext4"},
                  {"source", rwlayer},
                  {"options", {"X-containerd.mkfs.fs=ext4",
                               "X-containerd.mkfs.size=" + std::to_string(rwlayer_bytes), "rw", "loop"}}});
  for (const auto& layer : layers) {
    list.push_back({{"type", "erofs"}, {"source", layer}, {"options", {"ro", "loop"}}});
  }
  std::string lowerdir = layers.size() == 1 ? "{{ mount 1 }}"
                                            : "{{ overlay 1 " + std::to_string(layers.size()) + " }}";
  list.push_back({{"type", "format/mkdir/overlay"},
                  {"source", "overlay"},
                  {"options", {"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                               "X-containerd.mkdir.path={{ mount 0 }}/work:0755",
                               "workdir={{ mount 0 }}/work", "upperdir={{ mount 0 }}/upper",
                               "lowerdir=" + lowerdir}}});
  return list;
}

}  // namespace evmdk::test
