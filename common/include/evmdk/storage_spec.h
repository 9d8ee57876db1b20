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
inline constexpr std::string_view kDmverityPrefix = "X-kata.dmverity";  // every key above
}  // namespace marker

// Whether `option` is one of the X-kata.dmverity-enabled / X-kata.dmverity.* options.
bool is_dmverity_option(std::string_view option);

// dm-verity of one extra device of a flat (fsmeta) disk. Kata's X-kata.dmverity* options
// describe the storage's own device only, so a device slot's options carry the same keys
// under "X-erofs-vmdk.device.<slot>." instead of "X-kata." (slot 1 = the first extra device,
// as in the EROFS device table), e.g. X-erofs-vmdk.device.2.dmverity.roothash=<hex>. Their
// hashoffset is a byte offset on the whole disk (compose puts the trees after the last device).
std::string device_option_prefix(unsigned slot);  // "X-erofs-vmdk.device.<slot>."
// X-kata.dmverity* options -> the same options for device `slot`; other options are dropped.
std::vector<std::string> to_device_verity_options(const std::vector<std::string>& options,
                                                  unsigned slot);
// The options of device `slot` among a storage's options, back in X-kata.dmverity* form (for
// the guest's verity parser); empty when that slot has none.
std::vector<std::string> device_verity_options(const std::vector<std::string>& options,
                                               unsigned slot);
// Slots that have any "X-erofs-vmdk.device.<slot>." option, ascending. Throws evmdk::Error
// for a malformed slot number (0, not a number).
std::vector<unsigned> device_option_slots(const std::vector<std::string>& options);

}  // namespace evmdk
