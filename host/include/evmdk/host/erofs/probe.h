#pragma once
// Probing EROFS layer images: read and validate the superblock (magic, block size, feature
// bits, CRC32C checksum, size against the file) and the device table of multi-device images.
// The format itself is parsed by evmdk/ondisk/erofs.h; this adds what the host accepts.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/input_file.h"
#include "evmdk/ondisk/erofs.h"
#include "evmdk/uuid.h"

namespace evmdk::host {

// The on-disk layout is common's (evmdk/ondisk/erofs.h, docs/erofs-format.md); these are its
// names as the host has always spelled them.
inline constexpr uint32_t kErofsMagic = ondisk::erofs::kMagic;
inline constexpr uint64_t kSuperblockOffset = ondisk::erofs::kSuperblockOffset;
inline constexpr uint64_t kDeviceSlotSize = ondisk::erofs::kDeviceSlotSize;
namespace erofs_feature = ondisk::erofs::feature;

// One 128-byte device table slot (device id = index + 1).
using DeviceSlot = ondisk::ErofsDeviceSlot;

struct ErofsInfo {
  std::string path;
  uint8_t blkszbits = 0;
  uint64_t blocks = 0;     // filesystem size in blocks
  uint64_t fs_size = 0;    // blocks << blkszbits
  uint64_t file_size = 0;  // may exceed fs_size (an appended dm-verity tree)
  uint64_t device = 0;     // st_dev / st_ino: "the same file twice" detection
  uint64_t inode = 0;
  std::string resolved_path;  // probe_layer: the file actually opened, symlinks resolved
  std::array<uint8_t, 16> uuid{};
  std::string uuid_string;  // canonical lower-case 8-4-4-4-12, all zeros when unset
  std::string volume_name;
  uint32_t feature_compat = 0;
  uint32_t feature_incompat = 0;
  bool has_checksum = false;  // SB_CHKSUM set (and, when set, verified)
  uint32_t checksum = 0;
  uint64_t build_time = 0;
  uint16_t extra_devices = 0;
  uint16_t devt_slotoff = 0;
  std::vector<DeviceSlot> devices;
  // For each device slot: whether its mapped range (mapped_blkaddr and blocks, both non-zero)
  // lies inside this very file. Such a device is part of the layer -- a tar-index layer's tar,
  // which mkfs.erofs --tar=i appends to the index and maps in its device table -- and is read
  // from the layer's own disk or partition. Any other device (an fsmeta's blobs) needs flat
  // mode with its device blob.
  std::vector<bool> device_in_file;
  // The end of the filesystem and of every in-file device: the bytes that belong to the layer
  // (at most file_size; any rest is e.g. an appended dm-verity tree).
  uint64_t layer_end = 0;
  // A SHA-256 over the superblock block, sizes and UUID: cheap identity used to derive
  // deterministic PARTUUIDs and serials (not a content digest).
  std::array<uint8_t, 32> identity{};

  uint32_t block_size() const { return 1u << blkszbits; }
  // Devices that are not inside the file: the image needs flat mode with their blobs.
  size_t devices_outside_file() const;
  // "device N is mapped at bytes A..B, beyond the file's S bytes" for the first device outside
  // the file ("" when every device is inside).
  std::string first_device_outside_file() const;
};

struct ProbeOptions {
  bool check_blkid = true;  // require libblkid to agree (TYPE=erofs, same UUID)
  // Layers are regular files; a block device is probed only where an option explicitly
  // allows it. FIFOs, sockets and character devices are always refused, without blocking.
  bool allow_block_device = false;
};

// Reads and validates the layer at `path` (opened with open_input_file: never blocks, refuses
// special files). Throws evmdk::Error naming the path for a missing, unreadable or special
// file, not EROFS, bad checksum, unsupported block size / dirblkbits / feature bits, a
// truncated image (file shorter than the filesystem), or a malformed device table.
ErofsInfo probe_layer(const std::string& path, const ProbeOptions& options = {});
// Same, on a file already opened with open_input_file (of a kind `options` accepts), so a caller
// that opened the layer once (compose, verify) probes that very file; `path` names it in errors.
ErofsInfo probe_layer(const InputFile& file, const std::string& path,
                      const ProbeOptions& options = {});

// Same checks on an image at `offset` bytes inside an open file (a partition of a raw disk);
// `size` bounds the image (the partition size). file_size is set to `size`.
ErofsInfo probe_image_at(int fd, uint64_t offset, uint64_t size, const std::string& name);

// Canonical lower-case 8-4-4-4-12 text of a UUID (evmdk/uuid.h).
using evmdk::format_uuid;
std::string feature_names(uint32_t compat, uint32_t incompat);
nlohmann::json to_json(const ErofsInfo& info);

}  // namespace evmdk::host
