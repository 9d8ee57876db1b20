#include "evmdk/host/compose/compose.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "evmdk/atomic_file.h"
#include "evmdk/contract/markers.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/host/compose/raw_output.h"
#include "evmdk/host/compose/vmm_attach.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/input_file.h"
#include "evmdk/ondisk/erofs.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using vmdk::kSectorSize;

constexpr size_t kMaxDescriptorPath = 511;

uint64_t sectors_for(uint64_t bytes) { return (bytes + kSectorSize - 1) / kSectorSize; }
uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// A name-based GUID (RFC 9562 version 8 layout) from a digest.
gpt::Guid guid_from_digest(const std::array<uint8_t, 32>& digest) {
  gpt::Guid guid{};
  std::memcpy(guid.data(), digest.data(), 16);
  guid[6] = static_cast<uint8_t>((guid[6] & 0x0f) | 0x80);
  guid[8] = static_cast<uint8_t>((guid[8] & 0x3f) | 0x80);
  return guid;
}

// The PARTUUID of the layer at `position` (0 = top): its identity (superblock block, sizes,
// EROFS UUID) plus its position, so the same image twice still gets two PARTUUIDs and the
// guest can tell a swapped partition from the one the host meant.
gpt::Guid partuuid_for(const ErofsInfo& info, size_t position) {
  std::string label = fmt::format("erofs-vmdk partuuid v1 position {}", position);
  return guid_from_digest(Sha256()
                              .update(label)
                              .update(info.identity.data(), info.identity.size())
                              .update(info.uuid.data(), info.uuid.size())
                              .finish());
}

void check_descriptor_path(const std::string& path, const std::string& what) {
  if (path.size() > kMaxDescriptorPath) {
    throw Error(
        "{}: path is {} bytes; a VMDK descriptor holds at most {} (use --fdset or a "
        "shorter path)",
        what, path.size(), kMaxDescriptorPath);
  }
  for (char c : path) {
    if (c == '"' || c == '\n' || c == '\r' || c == '\0') {
      throw Error(
          "{}: path contains {} which a VMDK descriptor cannot hold (use --fdset or "
          "rename it)",
          what, c == '"' ? "a double quote" : "a line break or NUL");
    }
  }
}

bool valid_serial(const std::string& serial) {
  if (serial.empty() || serial.size() > kMaxSerialBytes) return false;
  return std::all_of(serial.begin(), serial.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

bool has_erofs_magic(const InputFile& file, const std::string& path) {
  uint8_t magic[4];
  size_t got = pread_full(file.fd.get(), magic, sizeof magic, kSuperblockOffset, path);
  return ondisk::has_erofs_magic(std::span(magic, got));
}

std::string absolute_path(const std::string& path) {
  return fs::absolute(fs::path(path)).lexically_normal().string();
}

[[noreturn]] void throw_too_many(size_t layers) {
  throw Error(
      "too many layers: {} (a GPT disk holds at most {}: Linux reads no partition past "
      "number {})",
      layers, gpt::kMaxPartitions, gpt::kMaxPartitions);
}

struct Planner {
  const ComposeOptions& options;
  ComposeResult result;
  std::string head;  // gpt head/tail bytes to write
  std::string tail;
  uint64_t zero_bytes = 0;

  explicit Planner(const ComposeOptions& o) : options(o) {}

  std::string output_file(const char* name) const {
    return (fs::path(result.output_dir) / name).string();
  }

  void add_extent(std::string role, uint64_t sectors, const std::string& path,
                  std::optional<size_t> layer_index, uint64_t file_offset = 0) {
    DiskExtent extent;
    extent.role = std::move(role);
    extent.first_lba = result.disk_sectors;
    extent.sectors = sectors;
    extent.path = path;
    extent.file_offset = file_offset;
    extent.layer_index = layer_index;
    result.extents.push_back(std::move(extent));
    result.disk_sectors += sectors;
  }

  void add_gap(uint64_t sectors) {
    if (sectors == 0) return;
    add_extent("zero", sectors, output_file(kZeroName), std::nullopt);
    zero_bytes = std::max(zero_bytes, sectors * kSectorSize);
  }

  std::vector<std::string> lower_options(size_t index, const ComposedLayer& layer,
                                         const std::vector<std::string>& extra) const {
    using contract::make_option;
    std::vector<std::string> opts{"ro", make_option(marker::kMultiLayer, "true"),
                                  std::string(marker::kOverlayLower)};
    if (layer.partition_number) {
      opts.push_back(make_option(marker::kGptPartitioned, "true"));
      opts.push_back(make_option(marker::kPartitionNumber, *layer.partition_number));
    }
    opts.push_back(make_option(marker::kLayerIndex, index));
    if (!layer.partuuid.empty()) opts.push_back(make_option(marker::kPartUuid, layer.partuuid));
    opts.push_back(make_option(marker::kErofsUuid, layer.info.uuid_string));
    opts.insert(opts.end(), extra.begin(), extra.end());
    return opts;
  }

  Storage lower_storage(size_t index, const ComposedLayer& layer,
                        const std::vector<std::string>& extra) const {
    Storage storage;
    storage.driver = "blk";
    storage.source = "serial:" + result.serial;
    storage.fstype = "erofs";
    storage.options = lower_options(index, layer, extra);
    storage.mount_point = fmt::format("lower-{}", index);
    return storage;
  }

  std::string make_serial() const {
    Sha256 sha;
    sha.update(fmt::format("erofs-vmdk serial v1 {}", to_string(result.mode)));
    for (const auto& layer : result.layers) {
      sha.update(layer.info.identity.data(), layer.info.identity.size());
      sha.update(layer.partuuid);
    }
    auto digest = sha.finish();
    return "evmdk-" + to_hex(digest.data(), 7);  // 6 + 14 = 20 bytes
  }

  void plan_raw(const std::vector<ComposedLayer>& layers) {
    result.layers = layers;
    auto& layer = result.layers[0];
    layer.sectors = sectors_for(layer.info.file_size);
    result.disk_path = layer.path;
    result.disk_format = "raw";
    add_extent("layer", layer.sectors, layer.path, 0);
  }

  void plan_gpt(const std::vector<ComposedLayer>& layers) {
    if (layers.size() > gpt::kMaxPartitions) throw_too_many(layers.size());
    result.layers = layers;
    gpt::Table table;
    table.entry_count = gpt::entry_count_for(layers.size());
    add_extent("gpt-head", gpt::kFirstPartitionLba, output_file(kGptHeadName), std::nullopt);
    for (size_t i = 0; i < result.layers.size(); ++i) {
      auto& layer = result.layers[i];
      layer.first_lba = result.disk_sectors;
      layer.sectors = sectors_for(layer.info.file_size);
      layer.partition_number = static_cast<uint32_t>(i + 1);
      auto partuuid = partuuid_for(layer.info, i);
      layer.partuuid = gpt::format_guid(partuuid);
      layer.partition_name = fmt::format("layer-{}", i);
      for (size_t j = 0; j < i; ++j) {
        if (result.layers[j].partuuid == layer.partuuid) {
          throw Error("layer {} ({}) and layer {} ({}) derive the same PARTUUID {}", j,
                      result.layers[j].path, i, layer.path, layer.partuuid);
        }
      }
      add_extent("layer", layer.sectors, layer.path, i);
      add_gap(align_up(result.disk_sectors, gpt::kAlignmentSectors) - result.disk_sectors);
      layer.partition_sectors = result.disk_sectors - layer.first_lba;
      table.partitions.push_back({gpt::linux_filesystem_type(), partuuid, layer.first_lba,
                                  result.disk_sectors - 1, 0, layer.partition_name});
    }
    if (options.pmem.enabled()) {  // pad to 2 MiB: the backup GPT goes at the new end
      uint64_t tail = gpt::tail_sectors(table.entry_count);
      add_gap(pmem_padded_sectors(result.disk_sectors + tail) - tail - result.disk_sectors);
    }
    uint64_t tail_start = result.disk_sectors;
    table.total_sectors = tail_start + gpt::tail_sectors(table.entry_count);
    Sha256 disk_sha;
    disk_sha.update("erofs-vmdk disk guid v1");
    for (const auto& layer : result.layers) disk_sha.update(layer.partuuid);
    table.disk_guid = guid_from_digest(disk_sha.finish());
    result.disk_guid = gpt::format_guid(table.disk_guid);
    head = gpt::render_head(table, gpt::kFirstPartitionLba);
    tail = gpt::render_tail(table);
    add_extent("gpt-tail", gpt::tail_sectors(table.entry_count), output_file(kGptTailName),
               std::nullopt);
    result.disk_format = "vmdk";
    entry_count_ = table.entry_count;
  }

  // Flat: the fsmeta's filesystem blocks, then every device blob at its slot's
  // mapped_blkaddr, sized from the slot (never from the blob's file size).
  void plan_flat(std::vector<ComposedLayer> layers) {
    const ErofsInfo& meta = layers[0].info;
    uint64_t block = meta.block_size();
    if (layers.size() - 1 != meta.devices.size()) {
      throw Error(
          "flat mode: fsmeta {} has {} devices in its device table but {} device "
          "blobs were given",
          layers[0].path, meta.devices.size(), layers.size() - 1);
    }
    layers[0].sectors = meta.fs_size / kSectorSize;
    add_extent("fsmeta", layers[0].sectors, layers[0].path, 0);
    for (size_t i = 1; i < layers.size(); ++i) {
      auto& blob = layers[i];
      const DeviceSlot& slot = meta.devices[i - 1];
      std::string name = fmt::format("device {} ({}, tag '{}')", i, blob.path, slot.tag);
      if (slot.blocks == 0) {
        throw Error("flat mode: {}: its device table slot says 0 blocks", name);
      }
      if (blob.is_erofs && blob.info.blkszbits != meta.blkszbits) {
        throw Error(
            "flat mode: {}: block size {} differs from the fsmeta's {} (mixed block "
            "sizes)",
            name, blob.info.block_size(), block);
      }
      uint64_t slot_bytes = slot.blocks * block;
      if (blob.info.file_size < slot_bytes) {
        throw Error(
            "flat mode: {}: the slot needs {} blocks ({} bytes) but the file has only {} "
            "bytes",
            name, slot.blocks, slot_bytes, blob.info.file_size);
      }
      if (blob.is_erofs && blob.info.fs_size != slot_bytes) {
        throw Error(
            "flat mode: {}: the slot says {} blocks but the device's EROFS superblock "
            "says {}",
            name, slot.blocks, blob.info.blocks);
      }
      uint64_t start = slot.mapped_blkaddr * block / kSectorSize;
      uint64_t filled = result.disk_sectors;
      if (start < filled) {
        const char* what = i == 1 ? "the fsmeta" : "the previous device";
        throw Error(
            "flat mode: {}: mapped_blkaddr {} (byte {}) overlaps {}, which ends at byte "
            "{} (slots must be in order and must not overlap)",
            name, slot.mapped_blkaddr, slot.mapped_blkaddr * block, what, filled * kSectorSize);
      }
      add_gap(start - filled);
      blob.first_lba = start;
      blob.sectors = slot_bytes / kSectorSize;
      add_extent("device", blob.sectors, blob.path, i);
    }
    result.layers = std::move(layers);
    result.disk_format = "vmdk";
    place_flat_verity_trees();
  }

  // Flat mode and dm-verity: a protected input's hash area (its verity superblock and tree,
  // bytes hashoffset..hash_end of its file) cannot follow its data on the disk, where the next
  // device starts right after the slot. So every hash area goes after the last device, at a
  // hash-block-aligned disk offset, and the options name that disk offset as hashoffset (the
  // guest reads the trees from the whole disk).
  void place_flat_verity_trees() {
    for (size_t i = 0; i < result.layers.size(); ++i) {
      auto& layer = result.layers[i];
      if (!inputs_[i].verity) continue;
      const VerityLayerInfo& info = *inputs_[i].verity;
      std::string name = i == 0 ? fmt::format("fsmeta ({})", layer.path)
                                : fmt::format("device {} ({})", i, layer.path);
      const VeritySuperblock& sb = info.superblock;
      uint64_t data_bytes = sb.data_blocks * sb.data_block_size;
      uint64_t extent_bytes = layer.sectors * kSectorSize;
      if (data_bytes != extent_bytes) {
        throw Error(
            "flat mode: {}: dm-verity covers {} bytes ({} blocks of {}) but its area on "
            "the disk is {} bytes (its {}); re-format it with `erofs-vmdk verity format "
            "--force --hash-offset {}`",
            name, data_bytes, sb.data_blocks, sb.data_block_size, extent_bytes,
            i == 0 ? "filesystem size" : "device slot", extent_bytes);
      }
      if (info.sidecar.hash_offset % kSectorSize != 0) {
        throw Error("flat mode: {}: hashoffset {} is not a multiple of {} bytes", name,
                    info.sidecar.hash_offset, kSectorSize);
      }
      uint64_t start =
          align_up(result.disk_sectors * kSectorSize, sb.hash_block_size) / kSectorSize;
      add_gap(start - result.disk_sectors);
      add_extent("verity", (info.hash_end - info.sidecar.hash_offset) / kSectorSize, layer.path, i,
                 info.sidecar.hash_offset / kSectorSize);
      layer.verity_root_hash = info.sidecar.root_hash;
      layer.verity_hash_offset = info.sidecar.hash_offset;
      layer.verity_hash_disk_offset = start * kSectorSize;
    }
  }

  // raw/gpt: the hash area stays inside the layer's extent, at the sidecar's hashoffset.
  void note_layer_verity() {
    for (size_t i = 0; i < result.layers.size(); ++i) {
      if (!inputs_[i].verity) continue;
      auto& layer = result.layers[i];
      layer.verity_root_hash = inputs_[i].verity->sidecar.root_hash;
      layer.verity_hash_offset = inputs_[i].verity->sidecar.hash_offset;
      layer.verity_hash_disk_offset = layer.first_lba * kSectorSize + *layer.verity_hash_offset;
    }
  }

  // Layer i's Storage options past the markers: its dm-verity options (hashoffset where the
  // guest finds the hash area: in the layer, or on the flat disk), then the caller's extras.
  std::vector<std::string> layer_options(size_t i) const {
    std::vector<std::string> out;
    if (const auto& verity = inputs_[i].verity) {
      try {
        out = verity_options(*verity, result.mode == ComposeMode::Flat
                                          ? *result.layers[i].verity_hash_disk_offset
                                          : verity->sidecar.hash_offset);
      } catch (const std::exception& error) {
        throw_with_context(error, fmt::format("layer {} ({})", i, result.layers[i].path));
      }
    }
    if (result.mode != ComposeMode::Flat || i == 0) {
      out.insert(out.end(), inputs_[i].extra_options.begin(), inputs_[i].extra_options.end());
    }
    return out;
  }

  void finish_outputs() {
    result.serial = options.serial.empty() ? make_serial() : options.serial;
    if (!valid_serial(result.serial)) {
      throw Error("serial '{}' must be 1..{} bytes of [A-Za-z0-9._-]", result.serial,
                  kMaxSerialBytes);
    }
    if (result.raw_image) {
      result.disk_path = output_file(kRawImageName);  // one file: one fd set
      if (options.fdset) result.fdset_files.push_back(result.disk_path);
    } else if (result.mode != ComposeMode::Raw) {
      result.disk_path = output_file(kDescriptorName);
      vmdk::Descriptor descriptor;
      std::map<std::string, uint32_t> fdset_of;
      for (const auto& extent : result.extents) {
        std::string path = extent.path;
        if (!options.fdset) {
          check_descriptor_path(path, extent.layer_index
                                          ? fmt::format("layer {} ({})", *extent.layer_index,
                                                        result.layers[*extent.layer_index].path)
                                          : "output directory " + result.output_dir);
        }
        if (options.fdset) {
          auto [it, inserted] = fdset_of.try_emplace(
              extent.path, options.first_fdset_id + static_cast<uint32_t>(fdset_of.size()));
          if (inserted) result.fdset_files.push_back(extent.path);
          path = fmt::format("/dev/fdset/{}", it->second);
        }
        descriptor.extents.push_back({path, extent.sectors, extent.file_offset});
      }
      result.descriptor = std::move(descriptor);
    }

    // Storage objects: one per layer (gpt/raw), one for the whole flat disk, which also
    // carries each protected device's dm-verity options under its slot number.
    if (result.mode == ComposeMode::Flat) {
      std::vector<std::string> extra = layer_options(0);
      for (size_t i = 1; i < result.layers.size(); ++i) {
        auto device = to_device_verity_options(layer_options(i), static_cast<unsigned>(i));
        extra.insert(extra.end(), device.begin(), device.end());
      }
      result.storages.push_back(lower_storage(0, result.layers[0], extra));
    } else {
      note_layer_verity();
      for (size_t i = 0; i < result.layers.size(); ++i) {
        result.storages.push_back(lower_storage(i, result.layers[i], layer_options(i)));
      }
    }

    std::string format = result.disk_format;
    result.qemu = vmm_attach_json({result.disk_path, format, result.serial, result.fdset_files,
                                   options.first_fdset_id,
                                   options.format != DiskFormat::Vmdk && format == "raw"});

    Layout layout;
    for (const auto& e : result.extents) {
      // A raw image holds compose's own bytes (GPT, zeros) itself: no file backs them.
      std::string path = result.raw_image && !e.layer_index ? "" : e.path;
      layout.extents.push_back(
          {e.role, e.first_lba, e.sectors, path, e.file_offset, e.layer_index});
    }
    for (const auto& l : result.layers) {
      LayoutLayer j;
      j.index = l.index;
      j.path = l.path;
      j.first_lba = l.first_lba;
      j.sectors = l.sectors;
      j.file_size = l.info.file_size;
      j.erofs = l.is_erofs;
      j.erofs_uuid = l.info.uuid_string;
      j.fs_size = l.info.fs_size;
      j.block_size = l.info.block_size();
      j.volume_name = l.info.volume_name;
      j.identity = l.identity;
      if (l.verity_hash_disk_offset) {
        j.verity_root_hash = l.verity_root_hash;
        j.verity_hash_offset = *l.verity_hash_offset;
        j.verity_hash_disk_offset = *l.verity_hash_disk_offset;
      }
      if (l.partition_number) {
        j.partition = *l.partition_number;
        j.partition_first_lba = l.first_lba;
        j.partition_last_lba = l.first_lba + l.partition_sectors - 1;
        j.partuuid = l.partuuid;
        j.partition_name = l.partition_name;
      }
      layout.layers.push_back(std::move(j));
    }
    layout.mode = to_string(result.mode);
    layout.disk = result.disk_path;
    layout.format = format;
    layout.serial = result.serial;
    layout.disk_sectors = result.disk_sectors;
    layout.disk_guid = result.disk_guid;
    layout.entry_count = entry_count_;
    result.layout = std::move(layout);
  }

  // Layers whose devices all lie inside their own file (tar-index layers) go on a raw disk or
  // one partition whole (sized from the file, which holds layer_end), so the guest finds each
  // device at its mapped offset. dm-verity of such a layer would have to cover the devices too, and
  // the guest reads a protected multi-device lower's devices only through per-device trees: refused
  // for now.
  void check_in_file_devices(const std::vector<ComposedLayer>& layers) const {
    for (const auto& layer : layers) {
      if (!layer.info.devices.empty() && inputs_[layer.index].verity) {
        throw Error(
            "layer {} ({}): dm-verity for a layer whose device table maps devices inside its "
            "own file (a tar-index layer) is not supported; compose it without verity",
            layer.index, layer.path);
      }
    }
  }

  // --format raw|auto for gpt/flat disks: raw where every layer can be shared into the output
  // directory (or copying is allowed); auto falls back to the VMDK and says why.
  // --attach pmem: always raw (raw mode too: disk.img is the padded layer), as --format raw.
  void choose_format() {
    const bool pmem = options.pmem.enabled();
    if (!pmem && (options.format == DiskFormat::Vmdk || result.mode == ComposeMode::Raw)) return;
    const DiskFormat format = pmem ? DiskFormat::Raw : options.format;
    std::string problem = raw_sharing_problem(result, result.output_dir);
    if (problem.empty() || (format == DiskFormat::Raw && options.allow_copy)) {
      result.raw_image = true;
      result.disk_format = "raw";
    } else if (format == DiskFormat::Raw) {
      throw Error("{}: {}; pass --allow-copy to copy what cannot be shared{}",
                  pmem ? "--attach pmem needs a raw image" : "--format raw", problem,
                  pmem ? "" : ", or use --format vmdk (or auto)");
    } else {
      result.format_note = fmt::format("--format auto chose vmdk: {}", problem);
    }
  }

  std::vector<LayerInput> inputs_;       // top first (flat: fsmeta, then the blobs in slot order)
  std::optional<uint32_t> entry_count_;  // gpt

  // Opens the layer once, without blocking (a FIFO or device is refused before the first read),
  // and takes everything from that one file: EROFS image or blob, its identity, and that its
  // dm-verity description is of this very file.
  ComposedLayer load_layer(size_t i, const LayerInput& input,
                           const std::vector<ComposedLayer>& earlier) const {
    ComposedLayer layer;
    layer.index = i;
    layer.path = absolute_path(input.path);
    std::string what = fmt::format("layer {} ({})", i, input.path);
    try {
      // Flat-mode blobs need not be EROFS images (erofs-utils' --blobdev writes raw chunks).
      bool maybe_blob = i > 0 && (options.mode == ComposeMode::Flat ||
                                  (options.mode == ComposeMode::Auto && !earlier.empty() &&
                                   earlier[0].info.devices_outside_file() > 0));
      InputFile file = open_input_file(layer.path, "file");
      if (maybe_blob && !has_erofs_magic(file, layer.path)) {
        layer.is_erofs = false;
        layer.identity = blob_identity(file, layer.path);
        layer.path = file.resolved_path;
        layer.info.path = layer.path;
        layer.info.file_size = layer.identity.size;
        layer.info.device = layer.identity.device;
        layer.info.inode = layer.identity.inode;
        Sha256 sha;
        sha.update(fmt::format("erofs-vmdk blob identity v1 {}", layer.identity.size));
        layer.info.identity = sha.finish();
      } else {
        layer.info = probe_layer(file, layer.path, ProbeOptions{options.check_blkid});
        // What QEMU opens must be what was probed: the resolved file, not a symlink to it.
        layer.path = layer.info.resolved_path;
        layer.info.path = layer.path;
        layer.identity = {layer.info.device, layer.info.inode, layer.info.file_size,
                          to_hex(layer.info.identity.data(), layer.info.identity.size())};
      }
      if (input.verity && (input.verity->device != static_cast<uint64_t>(file.st.st_dev) ||
                           input.verity->inode != static_cast<uint64_t>(file.st.st_ino))) {
        throw Error(
            "its dm-verity description is of another file (device:inode {}:{}, this "
            "file is {}:{})",
            input.verity->device, input.verity->inode, file.st.st_dev, file.st.st_ino);
      }
    } catch (const std::exception& error) {
      throw_with_context(error, what);
    }
    return layer;
  }

  ComposeResult plan() {
    if (options.layers.empty()) throw Error("compose: no layers given");
    if (options.output_dir.empty()) throw Error("compose: no output directory given (-o)");
    result.output_dir = absolute_path(options.output_dir);

    // Inputs in top-first order (flat mode: fsmeta first, blobs in slot order, as given).
    inputs_ = options.layers;
    const std::vector<LayerInput>& inputs = inputs_;
    bool flat_order = options.mode == ComposeMode::Flat;
    if (!flat_order && options.order == LayerOrder::BottomFirst) {
      std::reverse(inputs_.begin(), inputs_.end());
    }
    check_pmem_options(options, inputs_);

    std::vector<ComposedLayer> layers;
    for (size_t i = 0; i < inputs.size(); ++i) {
      ComposedLayer layer = load_layer(i, inputs[i], layers);
      std::string what = fmt::format("layer {} ({})", i, inputs[i].path);
      for (const auto& other : layers) {
        if (other.info.device == layer.info.device && other.info.inode == layer.info.inode) {
          throw Error("{}: the same file as layer {} ({}); a layer may appear only once", what,
                      other.index, other.path);
        }
      }
      layers.push_back(std::move(layer));
      // Refuse an oversized GPT before probing hundreds of files.
      if (i == 0 && inputs.size() > gpt::kMaxPartitions && options.mode != ComposeMode::Flat &&
          !(options.mode == ComposeMode::Auto && layers[0].info.devices_outside_file() > 0)) {
        throw_too_many(inputs.size());
      }
    }

    ComposeMode mode = options.mode;
    const ErofsInfo& first = layers[0].info;
    if (mode == ComposeMode::Auto) {
      // A tar-index layer's device is inside its own file: one layer like any other.
      if (first.devices_outside_file() > 0) {
        mode = ComposeMode::Flat;
      } else if (layers.size() == 1) {
        mode = ComposeMode::Raw;
      } else {
        mode = ComposeMode::Gpt;
      }
    }
    result.mode = mode;
    switch (mode) {
      case ComposeMode::Raw:
        if (layers.size() != 1) {
          throw Error("raw mode takes exactly one layer, {} given (use gpt)", layers.size());
        }
        if (first.devices_outside_file() > 0) {
          throw Error(
              "layer 0 ({}): a multi-device image ({} devices) needs flat mode with its "
              "device blobs ({})",
              layers[0].path, first.extra_devices, first.first_device_outside_file());
        }
        check_in_file_devices(layers);
        plan_raw(layers);
        break;
      case ComposeMode::Gpt:
        for (const auto& layer : layers) {
          if (layer.info.devices_outside_file() > 0) {
            throw Error(
                "layer {} ({}): a multi-device image ({} devices) cannot be one GPT "
                "partition; compose it in flat mode with its device blobs ({})",
                layer.index, layer.path, layer.info.extra_devices,
                layer.info.first_device_outside_file());
          }
        }
        check_in_file_devices(layers);
        plan_gpt(layers);
        break;
      case ComposeMode::Flat:
        if (!layers[0].is_erofs || first.extra_devices == 0) {
          throw Error(
              "flat mode: the first input ({}) must be a multi-device EROFS image (a "
              "merged fsmeta with a device table)",
              layers[0].path);
        }
        plan_flat(std::move(layers));
        break;
      case ComposeMode::Auto: break;
    }
    if (options.pmem.enabled()) {  // gpt padded before its tail (plan_gpt)
      if (mode != ComposeMode::Gpt)
        add_gap(pmem_padded_sectors(result.disk_sectors) - result.disk_sectors);
      check_pmem_layout(result);
    }
    choose_format();
    finish_outputs();
    finish_pmem_outputs(result, options);
    return std::move(result);
  }
};

}  // namespace

std::string to_string(ComposeMode mode) {
  switch (mode) {
    case ComposeMode::Auto: return "auto";
    case ComposeMode::Raw: return "raw";
    case ComposeMode::Flat: return "flat";
    case ComposeMode::Gpt: return "gpt";
  }
  return "?";
}

ComposeMode parse_compose_mode(const std::string& text) {
  if (text == "auto") return ComposeMode::Auto;
  if (text == "raw") return ComposeMode::Raw;
  if (text == "flat") return ComposeMode::Flat;
  if (text == "gpt") return ComposeMode::Gpt;
  throw Error("--mode '{}': expected auto, raw, flat or gpt", text);
}

LayerOrder parse_layer_order(const std::string& text) {
  if (text == "top-first") return LayerOrder::TopFirst;
  if (text == "bottom-first") return LayerOrder::BottomFirst;
  throw Error("--order '{}': expected top-first or bottom-first", text);
}

ComposeResult plan_compose(const ComposeOptions& options) {
  Planner planner(options);
  return planner.plan();
}

ComposeResult compose(const ComposeOptions& options) {
  Planner planner(options);
  ComposeResult result = planner.plan();
  OutputTransaction transaction(result.output_dir);
  if (result.raw_image) {
    RawImageOptions raw_options;
    raw_options.policy = options.allow_copy ? RawCopyPolicy::AllowCopy : RawCopyPolicy::ReflinkOnly;
    auto pieces = raw_pieces_from_compose(result, planner.head, planner.tail);
    std::string image = transaction.final_path(kRawImageName);
    transaction.add_filled(kRawImageName, 0444, [&](int fd, const std::string&) {
      result.raw_report = fill_raw_image(fd, image, pieces, raw_options);
    });
    result.layout.raw_image = to_json(*result.raw_report);
  }
  if (result.descriptor) transaction.add(kDescriptorName, vmdk::render(*result.descriptor));
  if (!planner.head.empty() && !result.raw_image) {
    transaction.add(kGptHeadName, planner.head, 0444);
    transaction.add(kGptTailName, planner.tail, 0444);
  }
  if (planner.zero_bytes > 0 && !result.raw_image) {
    transaction.add_sparse(kZeroName, static_cast<off_t>(planner.zero_bytes), 0444);
  }
  transaction.add(kStorageName, to_json(result.storages).dump(2) + "\n");
  transaction.add(kQemuName, result.qemu.dump(2) + "\n");
  transaction.add(kLayoutName, to_json(result.layout).dump(2) + "\n");
  transaction.commit();
  return result;
}

}  // namespace evmdk::host
