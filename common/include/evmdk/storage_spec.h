#pragma once
// The Kata-compatible Storage object (kata-agent's protobuf `Storage`) that the host emits and
// the guest driver consumes, plus helpers for the `X-kata.*` option markers.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk {

struct Storage {
  std::string driver;                       // "blk", "scsi", or "virtio-serial" style finder
  std::vector<std::string> driver_options;  // passed through
  std::string source;                       // /dev path, PCI path, or serial
  std::string fstype;                       // "erofs", "ext4", ...
  std::vector<std::string> options;         // mount options plus X-kata.* markers
  std::string mount_point;

  bool operator==(const Storage&) const = default;
};

// JSON field names match kata-agent's protobuf JSON: driver, driver_options, source, fstype,
// options, mount_point. Unknown fields are ignored when reading (fs_group, shared, ...).
nlohmann::json to_json(const Storage& storage);
Storage storage_from_json(const nlohmann::json& json);
std::vector<Storage> storages_from_json(const nlohmann::json& json);  // array of objects
nlohmann::json to_json(const std::vector<Storage>& storages);

// Option helpers. A marker is either "key" or "key=value".
bool has_option(const std::vector<std::string>& options, std::string_view key);
std::optional<std::string> option_value(const std::vector<std::string>& options,
                                        std::string_view key);
std::vector<std::string> option_values(const std::vector<std::string>& options,
                                       std::string_view key);

// Well-known markers.
namespace marker {
inline constexpr std::string_view kMultiLayer = "X-kata.multi-layer";            // =true
inline constexpr std::string_view kOverlayUpper = "X-kata.overlay-upper";        // flag
inline constexpr std::string_view kOverlayLower = "X-kata.overlay-lower";        // flag
inline constexpr std::string_view kGptPartitioned = "X-kata.gpt-partitioned";    // =true
inline constexpr std::string_view kPartitionNumber = "X-kata.partition-number";  // =N
inline constexpr std::string_view kMkdirPath = "X-kata.mkdir.path";              // =spec
inline constexpr std::string_view kContainerdMkdirPath = "X-containerd.mkdir.path";
// erofs-vmdk extensions, so the guest can check it holds the layer the host meant.
inline constexpr std::string_view kPartUuid = "X-erofs-vmdk.partuuid";      // =uuid
inline constexpr std::string_view kErofsUuid = "X-erofs-vmdk.erofs-uuid";   // =uuid
inline constexpr std::string_view kLayerIndex = "X-erofs-vmdk.layer-index"; // =0 is top
inline constexpr std::string_view kFlatDevice = "X-erofs-vmdk.flat-device"; // =<json>
// dm-verity
inline constexpr std::string_view kDmverityEnabled = "X-kata.dmverity-enabled";  // =true
inline constexpr std::string_view kDmverityRoothash = "X-kata.dmverity.roothash";
inline constexpr std::string_view kDmverityHashoffset = "X-kata.dmverity.hashoffset";
inline constexpr std::string_view kDmverityBlocksize = "X-kata.dmverity.blocksize";
inline constexpr std::string_view kDmverityHashsize = "X-kata.dmverity.hashsize";
inline constexpr std::string_view kDmverityAlgorithm = "X-kata.dmverity.algorithm";
inline constexpr std::string_view kDmveritySalt = "X-kata.dmverity.salt";
inline constexpr std::string_view kDmverityHashtype = "X-kata.dmverity.hashtype";
inline constexpr std::string_view kDmverityNoSuperblock = "X-kata.dmverity.no-superblock";
}  // namespace marker

}  // namespace evmdk
