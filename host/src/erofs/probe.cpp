#include "evmdk/host/erofs/probe.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "evmdk/blkid_ptr.h"
#include "evmdk/checked_math.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

// Kernel limits: 512-byte blocks up to the page size (4 KiB on x86_64).
constexpr ondisk::ErofsSuperblockLimits kHostBlockSizes{9, 12};

// A SHA-256 over the superblock block and the sizes: the layer's cheap identity.
std::array<uint8_t, 32> sha256_identity(const std::string& block, uint64_t fs_size,
                                        uint64_t file_size) {
  return Sha256()
      .update(fmt::format("erofs-vmdk layer identity v1 {} {}", fs_size, file_size))
      .update(block)
      .finish();
}

// libblkid must see the same filesystem: TYPE=erofs and the same UUID.
void check_with_blkid(int fd, uint64_t offset, uint64_t size, const ErofsInfo& info,
                      const std::string& name) {
  BlkidProbePtr probe(blkid_new_probe());
  if (!probe) throw Error("{}: cannot create a libblkid probe", name);
  if (blkid_probe_set_device(probe.get(), fd, static_cast<blkid_loff_t>(offset),
                             static_cast<blkid_loff_t>(size)) != 0) {
    throw Error("{}: libblkid cannot use the file", name);
  }
  blkid_probe_enable_superblocks(probe.get(), 1);
  blkid_probe_set_superblocks_flags(probe.get(), BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID);
  int rc = blkid_do_safeprobe(probe.get());
  if (rc != 0) {
    throw Error("{}: libblkid does not recognise an EROFS filesystem (result {})", name, rc);
  }
  const char* type = nullptr;
  if (blkid_probe_lookup_value(probe.get(), "TYPE", &type, nullptr) != 0 || type == nullptr ||
      std::strcmp(type, "erofs") != 0) {
    throw Error("{}: libblkid reports TYPE={}, expected erofs", name, type ? type : "(none)");
  }
  const char* uuid = nullptr;
  bool zero_uuid = info.uuid == std::array<uint8_t, 16>{};
  if (blkid_probe_lookup_value(probe.get(), "UUID", &uuid, nullptr) == 0 && uuid != nullptr) {
    if (info.uuid_string != uuid) {
      throw Error("{}: libblkid reports UUID {}, the superblock says {}", name, uuid,
                  info.uuid_string);
    }
  } else if (!zero_uuid) {
    throw Error("{}: libblkid reports no UUID, the superblock says {}", name, info.uuid_string);
  }
}

// Bytes [offset, end) device slot `i` maps on the primary device, checked; nullopt when the slot
// has no mapping (mapped_blkaddr or blocks 0: the kernel then opens the device by its tag).
std::optional<std::pair<uint64_t, uint64_t>> mapped_range(const ErofsInfo& info, size_t i,
                                                          const std::string& name) {
  const DeviceSlot& slot = info.devices[i];
  if (slot.mapped_blkaddr == 0 || slot.blocks == 0) return std::nullopt;
  std::string what = fmt::format("{}: device {}", name, i + 1);
  uint64_t offset =
      mul_or_throw<uint64_t>(slot.mapped_blkaddr, info.block_size(), what + " offset");
  uint64_t size = mul_or_throw<uint64_t>(slot.blocks, info.block_size(), what + " size");
  return std::pair{offset, add_or_throw(offset, size, what + " end")};
}

// Which devices lie inside the file (part of the layer) and where the layer's bytes end.
void classify_devices(ErofsInfo& info, const std::string& name) {
  info.layer_end = info.fs_size;
  info.device_in_file.assign(info.devices.size(), false);
  for (size_t i = 0; i < info.devices.size(); ++i) {
    auto range = mapped_range(info, i, name);
    if (!range || range->second > info.file_size) continue;
    info.device_in_file[i] = true;
    info.layer_end = std::max(info.layer_end, range->second);
  }
}

// The superblock (common's parser) plus what the host accepts: block sizes the kernel mounts,
// no dirblkbits, only known incompatible features, a filesystem that fits the file, a valid
// checksum, a device table inside the metadata.
ErofsInfo parse_superblock(int fd, uint64_t offset, uint64_t size, const std::string& name) {
  if (size < kSuperblockOffset + ondisk::erofs::kSuperblockSize) {
    throw Error("{}: not an EROFS image: only {} bytes, too small for a superblock", name, size);
  }
  std::array<uint8_t, ondisk::erofs::kSuperblockSize> bytes{};
  pread_exact(fd, bytes.data(), bytes.size(), offset + kSuperblockOffset, name);
  const ondisk::ErofsSuperblock sb = ondisk::parse_erofs_superblock(bytes, name, kHostBlockSizes);
  ErofsInfo info;
  info.path = name;
  info.checksum = sb.checksum;
  info.feature_compat = sb.feature_compat;
  info.blkszbits = sb.blkszbits;
  info.build_time = sb.build_time;
  info.uuid = sb.uuid;
  info.uuid_string = format_uuid(info.uuid);
  info.volume_name = ondisk::erofs_printable(sb.volume_name);
  info.feature_incompat = sb.feature_incompat;
  info.extra_devices = sb.extra_devices;
  info.devt_slotoff = sb.devt_slotoff;
  info.file_size = size;

  if (sb.dirblkbits != 0) {
    throw Error("{}: unsupported EROFS dirblkbits {} (must be 0)", name, sb.dirblkbits);
  }
  if (uint32_t unknown = sb.unknown_incompat(); unknown != 0) {
    throw Error("{}: unknown EROFS incompatible feature bits {:#x}", name, unknown);
  }
  // 48BIT images keep the high 16 block-count bits where root_nid was (the parser adds them).
  info.blocks = sb.blocks;
  info.fs_size = sb.fs_size();
  if (info.blocks == 0) throw Error("{}: EROFS superblock says the filesystem has 0 blocks", name);
  if (info.fs_size > size) {
    throw Error(
        "{}: truncated EROFS image: the filesystem is {} bytes ({} blocks of {}) but the "
        "file has only {}",
        name, info.fs_size, info.blocks, info.block_size(), size);
  }

  // The superblock block (or the first 4 KiB of a small-block image) for checksum + identity.
  uint64_t block_bytes = std::max<uint64_t>(info.block_size(), 4096);
  block_bytes = std::min(block_bytes, info.fs_size);
  std::string block(block_bytes, '\0');
  pread_exact(fd, block.data(), block.size(), offset, name);
  info.has_checksum = sb.has_checksum();
  ondisk::check_erofs_checksum(ondisk::byte_view(block), sb, name);

  std::string table;
  if (sb.has_device_table() && sb.extra_devices > 0) {
    uint64_t table_offset = sb.device_table_offset();
    uint64_t table_end = table_offset + sb.device_table_size();
    if (table_offset < kSuperblockOffset + ondisk::erofs::kSuperblockSize ||
        table_end > info.fs_size) {
      throw Error("{}: EROFS device table at bytes {}..{} lies outside the image metadata", name,
                  table_offset, table_end);
    }
    table.resize(table_end - table_offset);
    pread_exact(fd, table.data(), table.size(), offset + table_offset, name);
  }
  // Extra devices without the DEVICE_TABLE feature are refused here.
  info.devices = ondisk::parse_erofs_device_table(ondisk::byte_view(table), sb, name);
  classify_devices(info, name);
  info.identity = sha256_identity(block, info.fs_size, info.file_size);
  return info;
}

}  // namespace

size_t ErofsInfo::devices_outside_file() const {
  return static_cast<size_t>(std::count(device_in_file.begin(), device_in_file.end(), false)) +
         (devices.size() - std::min(devices.size(), device_in_file.size()));
}

std::string ErofsInfo::first_device_outside_file() const {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (i < device_in_file.size() && device_in_file[i]) continue;
    auto range = mapped_range(*this, i, path);
    if (!range) return fmt::format("device {} has no mapped_blkaddr/blocks", i + 1);
    return fmt::format("device {} is mapped at bytes {}..{}, beyond the file's {} bytes", i + 1,
                       range->first, range->second, file_size);
  }
  return {};
}

std::string feature_names(uint32_t compat, uint32_t incompat) {
  return ondisk::erofs_feature_names(compat, incompat);
}

ErofsInfo probe_image_at(int fd, uint64_t offset, uint64_t size, const std::string& name) {
  return parse_superblock(fd, offset, size, name);
}

ErofsInfo probe_layer(const std::string& path, const ProbeOptions& options) {
  // Never blocks on a FIFO; a device or other special file is refused before the first read.
  InputFile file = open_input_file(
      path, "file",
      options.allow_block_device ? InputKind::RegularOrBlockDevice : InputKind::RegularFile);
  return probe_layer(file, path, options);
}

ErofsInfo probe_layer(const InputFile& file, const std::string& path, const ProbeOptions& options) {
  if (S_ISBLK(file.st.st_mode) && !options.allow_block_device) {
    throw Error("{}: is a block device, not a regular file", path);
  }
  uint64_t size = static_cast<uint64_t>(file.st.st_size);
  if (S_ISBLK(file.st.st_mode)) {
    off_t end = ::lseek(file.fd.get(), 0, SEEK_END);
    if (end < 0) throw_errno("cannot size block device {}", path);
    size = static_cast<uint64_t>(end);
  }
  ErofsInfo info = parse_superblock(file.fd.get(), 0, size, path);
  info.device = file.st.st_dev;
  info.inode = file.st.st_ino;
  info.resolved_path = file.resolved_path;
  if (options.check_blkid) check_with_blkid(file.fd.get(), 0, size, info, path);
  return info;
}

nlohmann::json to_json(const ErofsInfo& info) {
  nlohmann::json devices = nlohmann::json::array();
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const auto& d = info.devices[i];
    devices.push_back({{"id", i + 1},
                       {"tag", d.tag},
                       {"blocks", d.blocks},
                       {"mapped_blkaddr", d.mapped_blkaddr},
                       {"in_file", i < info.device_in_file.size() && info.device_in_file[i]}});
  }
  return nlohmann::json{
      {"path", info.path},
      {"type", "erofs"},
      {"block_size", info.block_size()},
      {"blkszbits", info.blkszbits},
      {"blocks", info.blocks},
      {"fs_size", info.fs_size},
      {"file_size", info.file_size},
      {"layer_end", info.layer_end},
      {"uuid", info.uuid_string},
      {"volume_name", info.volume_name},
      {"feature_compat", info.feature_compat},
      {"feature_incompat", info.feature_incompat},
      {"features", feature_names(info.feature_compat, info.feature_incompat)},
      {"checksum", info.has_checksum ? fmt::format("{:08x}", info.checksum) : std::string()},
      {"build_time", info.build_time},
      {"extra_devices", info.extra_devices},
      {"devt_slotoff", info.devt_slotoff},
      {"devices", devices}};
}

}  // namespace evmdk::host
