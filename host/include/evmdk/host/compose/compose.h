#pragma once
// Compose N EROFS layers into one read-only disk for a VM: raw (one layer), flat (a merged
// fsmeta.erofs plus its device blobs, at their mapped_blkaddr) or gpt (one partition per
// layer). Writes the VMDK descriptor, GPT head/tail, zero filler, storage.json, qemu.json
// and layout.json into the output directory atomically. See docs/compose.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/host/compose/layout.h"
#include "evmdk/host/compose/pmem_attach.h"
#include "evmdk/host/compose/raw_image.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/storage_spec.h"
#include "evmdk/vmdk/descriptor.h"

namespace evmdk::host {

enum class ComposeMode { Auto, Raw, Flat, Gpt };
enum class LayerOrder { TopFirst, BottomFirst };
// What a gpt or flat disk is written as: the VMDK descriptor over the layer files, or one raw
// image (disk.img) with the layers' blocks shared by reflink; auto: raw where every layer can
// be shared into the output directory, else VMDK (ComposeResult::format_note says why).
enum class DiskFormat { Vmdk, Raw, Auto };

std::string to_string(ComposeMode mode);
ComposeMode parse_compose_mode(const std::string& text);  // auto|raw|flat|gpt
LayerOrder parse_layer_order(const std::string& text);    // top-first|bottom-first
std::string to_string(DiskFormat format);
// vmdk|raw|auto; `option` names the option in the error (--format, --disk-format).
DiskFormat parse_disk_format(const std::string& text, const std::string& option = "--format");

struct LayerInput {
  std::string path;
  // The layer's dm-verity protection (apply_verity_policy or the hook fill it in): compose puts
  // the hash area on the disk and encodes its X-kata.dmverity.* options. Flat mode: a device
  // blob's (which has no Storage of its own) go on the disk's one Storage as
  // X-erofs-vmdk.device.<slot>.dmverity.*, every hashoffset naming the tree's disk offset.
  std::optional<VerityLayerInfo> verity;
  // Other options appended to this layer's Storage, after the dm-verity ones (e.g. the hook's
  // mount options). Flat mode: the fsmeta's go on the disk's one Storage; a blob's are unused.
  std::vector<std::string> extra_options = {};
};

struct ComposeOptions {
  ComposeMode mode = ComposeMode::Auto;
  // Order of `layers`. Flat mode: the fsmeta comes first, then the blobs in slot order,
  // whatever the order.
  LayerOrder order = LayerOrder::TopFirst;
  std::vector<LayerInput> layers;
  std::string output_dir;
  // Descriptor names /dev/fdset/N instead of paths (rootless QEMU receives fds); qemu.json
  // lists which file goes into which fdset.
  bool fdset = false;
  uint32_t first_fdset_id = 1;
  // Overrides the deterministic serial (at most 20 bytes, [A-Za-z0-9._-]).
  std::string serial;
  bool check_blkid = true;  // passed to probe_layer
  // gpt and flat disks (raw mode is the layer itself whatever the format).
  DiskFormat format = DiskFormat::Vmdk;
  // Raw image: copy (and report) what cannot be shared instead of refusing.
  bool allow_copy = false;
  // virtio-pmem (pmem_attach.h): a raw image (disk.img, also in raw mode) padded to 2 MiB,
  // pmem storages with DAX, qemu.json's "pmem"; refused with format Vmdk and with dm-verity.
  PmemAttachOptions pmem;
};

inline constexpr size_t kMaxSerialBytes = 20;

// A span of the virtual disk and where its bytes come from.
struct DiskExtent {
  std::string role;  // "gpt-head", "layer", "zero", "gpt-tail", "fsmeta", "device", "verity"
  uint64_t first_lba = 0;
  uint64_t sectors = 0;
  std::string path;                   // the backing file
  uint64_t file_offset = 0;           // in sectors
  std::optional<size_t> layer_index;  // gpt/raw: 0 = top; flat: 0 = fsmeta, i = device i
};

struct ComposedLayer {
  size_t index = 0;       // 0 = top layer (gpt/raw); flat: 0 = fsmeta, i = device slot i
  std::string path;       // absolute, symlinks resolved: the file that was probed
  FileIdentity identity;  // recorded in layout.json for verify
  ErofsInfo info;         // blobs that are not EROFS images carry only path/file_size
  bool is_erofs = true;
  std::optional<uint32_t> partition_number;  // gpt only
  std::string partuuid;                      // gpt only
  std::string partition_name;                // gpt only
  uint64_t first_lba = 0;
  uint64_t sectors = 0;  // the layer file, rounded up to 512 bytes
  // gpt: the partition spans the layer and the zero padding up to the next 1 MiB boundary,
  // so it both starts and ends aligned (sgdisk -v cautions about unaligned ends).
  uint64_t partition_sectors = 0;
  // dm-verity, when the layer's options carry it: the root hash, and where the hash area
  // (verity superblock, then the tree) starts, as a byte offset into the layer file and on
  // the disk. raw/gpt: the tree follows the data inside the layer's extent; flat: the trees
  // are placed after the last device (the next device starts right after a blob's slot).
  std::string verity_root_hash;
  std::optional<uint64_t> verity_hash_offset;       // in the layer file
  std::optional<uint64_t> verity_hash_disk_offset;  // on the disk
};

struct ComposeResult {
  ComposeMode mode = ComposeMode::Raw;  // resolved (never Auto)
  std::string output_dir;               // absolute
  std::string disk_path;                // the descriptor, or the layer itself in raw mode
  std::string disk_format;              // "vmdk" or "raw"
  std::string serial;
  uint64_t disk_sectors = 0;
  std::optional<vmdk::Descriptor> descriptor;  // absent in raw mode
  std::vector<std::string> fdset_files;        // fdset mode: file of fdset first_fdset_id + i
  std::string disk_guid;                       // gpt only
  std::vector<ComposedLayer> layers;
  std::vector<DiskExtent> extents;
  std::vector<Storage> storages;
  nlohmann::json qemu;  // contents of qemu.json
  Layout layout;        // layout.json (to_json(layout) is its contents)
  // A raw image (disk.img) of a gpt or flat disk: how its bytes were assembled (compose() fills
  // it in; plan_compose() leaves it empty).
  bool raw_image = false;
  std::optional<RawImageReport> raw_report;
  // auto: why the VMDK was chosen instead of a raw image (empty when raw was chosen).
  std::string format_note;
};

// Probes every layer, plans the disk and returns it without writing anything.
ComposeResult plan_compose(const ComposeOptions& options);

// plan_compose() then writes every output file in one OutputTransaction: all appear, or (on
// any error) nothing new is left in the output directory. Same inputs, same bytes.
ComposeResult compose(const ComposeOptions& options);

}  // namespace evmdk::host
