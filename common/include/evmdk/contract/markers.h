#pragma once
// Every option marker of the host <-> guest contract: the Kata markers (X-kata.*) the guest
// agent's storage handlers know, containerd's (X-containerd.*) the hook reads from mount
// lists, and this project's own (X-erofs-vmdk.*). Host and guest spell them only through
// these names. A marker is "key" or "key=value" in a Storage's options.
#include <fmt/format.h>

#include <string>
#include <string_view>

namespace evmdk::contract {

namespace marker {

inline constexpr std::string_view kMarkerPrefix = "X-";  // every marker starts so
inline constexpr std::string_view kKataPrefix = "X-kata.";
inline constexpr std::string_view kContainerdPrefix = "X-containerd.";
inline constexpr std::string_view kErofsVmdkPrefix = "X-erofs-vmdk.";

// ---- Kata ----
inline constexpr std::string_view kMultiLayer = "X-kata.multi-layer";            // =true
inline constexpr std::string_view kOverlayUpper = "X-kata.overlay-upper";        // flag
inline constexpr std::string_view kOverlayLower = "X-kata.overlay-lower";        // flag
inline constexpr std::string_view kGptPartitioned = "X-kata.gpt-partitioned";    // =true
inline constexpr std::string_view kPartitionNumber = "X-kata.partition-number";  // =N (1..)
inline constexpr std::string_view kMkdirPath = "X-kata.mkdir.path";              // =spec
// dm-verity of the storage's own device (contract/verity_options.h encodes and decodes them).
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
inline constexpr std::string_view kDmverityKeyPrefix = "X-kata.dmverity.";

// ---- containerd (mount lists the hook reads) ----
inline constexpr std::string_view kContainerdMkdirPath = "X-containerd.mkdir.path";  // =spec
inline constexpr std::string_view kContainerdDmverity = "X-containerd.dmverity";     // =sidecar
inline constexpr std::string_view kContainerdMkfsFs = "X-containerd.mkfs.fs";        // =ext4
inline constexpr std::string_view kContainerdMkfsSize = "X-containerd.mkfs.size";    // =bytes

// ---- erofs-vmdk: what the guest checks and builds beyond Kata's markers ----
// So the guest can check it holds the layer the host meant:
inline constexpr std::string_view kPartUuid = "X-erofs-vmdk.partuuid";       // =uuid
inline constexpr std::string_view kErofsUuid = "X-erofs-vmdk.erofs-uuid";    // =uuid
inline constexpr std::string_view kLayerIndex = "X-erofs-vmdk.layer-index";  // =0 is top
// The rootfs the hook planned:
inline constexpr std::string_view kRootfsBind = "X-erofs-vmdk.rootfs-bind";          // =spec
inline constexpr std::string_view kRootfsReadonly = "X-erofs-vmdk.rootfs-readonly";  // =true
inline constexpr std::string_view kOverlayOption = "X-erofs-vmdk.overlay-option";    // =opt
// dm-verity of extra device <slot> of a flat disk: X-erofs-vmdk.device.<slot>.dmverity*.
inline constexpr std::string_view kDevicePrefix = "X-erofs-vmdk.device.";
// A lower on virtio-pmem read through DAX (contract/pmem.h encodes and decodes them): the
// guest mounts it with dax=always and checks mountinfo that DAX took effect; dax-fallback
// says whether a silent fallback to the page cache is an error (the default) or a warning.
inline constexpr std::string_view kDax = "X-erofs-vmdk.dax";                  // =always
inline constexpr std::string_view kDaxFallback = "X-erofs-vmdk.dax-fallback";  // =error|warn

}  // namespace marker

// "<key>=<value>" (value formatted with fmt: a number, a string, ...).
template <typename T>
std::string make_option(std::string_view key, const T& value) {
  return fmt::format("{}={}", key, value);
}

// The key of an option: the text before the first '=', or all of it.
inline std::string_view option_key(std::string_view option) {
  return option.substr(0, option.find('='));
}

// Whether an option is a marker (X-...), not a mount option.
inline bool is_marker(std::string_view option) {
  return option.substr(0, marker::kMarkerPrefix.size()) == marker::kMarkerPrefix;
}

}  // namespace evmdk::contract

namespace evmdk {
// The markers' older home (storage_spec.h): evmdk::marker::kMultiLayer etc. keep working.
namespace marker = contract::marker;
}  // namespace evmdk
