#include "evmdk/host/erofs/probe.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t le64(const uint8_t* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}

// Kernel limits: 512-byte blocks up to the page size (4 KiB on x86_64).
constexpr uint8_t kMinBlkszBits = 9;
constexpr uint8_t kMaxBlkszBits = 12;

std::string printable(const uint8_t* bytes, size_t size) {
  std::string out;
  for (size_t i = 0; i < size && bytes[i] != 0; ++i) {
    char c = static_cast<char>(bytes[i]);
    out += (bytes[i] >= 0x20 && bytes[i] < 0x7f) ? c : '?';
  }
  return out;
}

struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

std::array<uint8_t, 32> sha256_identity(const std::string& block, uint64_t fs_size,
                                        uint64_t file_size) {
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter> ctx(EVP_MD_CTX_new());
  std::array<uint8_t, 32> digest{};
  unsigned length = 0;
  std::string sizes = fmt::format("erofs-vmdk layer identity v1 {} {}", fs_size, file_size);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), sizes.data(), sizes.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), block.data(), block.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest.data(), &length) != 1) {
    throw Error("SHA-256 failed");
  }
  return digest;
}

struct BlkidProbeDeleter {
  void operator()(blkid_probe probe) const { blkid_free_probe(probe); }
};

// libblkid must see the same filesystem: TYPE=erofs and the same UUID.
void check_with_blkid(int fd, uint64_t offset, uint64_t size, const ErofsInfo& info,
                      const std::string& name) {
  std::unique_ptr<blkid_struct_probe, BlkidProbeDeleter> probe(blkid_new_probe());
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

ErofsInfo parse_superblock(int fd, uint64_t offset, uint64_t size, const std::string& name) {
  if (size < kSuperblockOffset + 128) {
    throw Error("{}: not an EROFS image: only {} bytes, too small for a superblock", name, size);
  }
  uint8_t sb[128];
  pread_exact(fd, sb, sizeof sb, offset + kSuperblockOffset, name);
  uint32_t magic = le32(sb);
  if (magic != kErofsMagic) {
    throw Error("{}: not an EROFS image (magic {:#010x} at byte 1024, expected {:#010x})", name,
                magic, kErofsMagic);
  }
  ErofsInfo info;
  info.path = name;
  info.checksum = le32(sb + 4);
  info.feature_compat = le32(sb + 8);
  info.blkszbits = sb[12];
  info.build_time = le64(sb + 24);
  uint64_t blocks_lo = le32(sb + 36);
  std::memcpy(info.uuid.data(), sb + 48, 16);
  info.uuid_string = format_uuid(info.uuid);
  info.volume_name = printable(sb + 64, 16);
  info.feature_incompat = le32(sb + 80);
  info.extra_devices = le16(sb + 86);
  info.devt_slotoff = le16(sb + 88);
  uint8_t dirblkbits = sb[90];
  info.file_size = size;

  if (info.blkszbits < kMinBlkszBits || info.blkszbits > kMaxBlkszBits) {
    throw Error("{}: unsupported EROFS block size bits {} (supported {}..{})", name,
                info.blkszbits, kMinBlkszBits, kMaxBlkszBits);
  }
  if (dirblkbits != 0) throw Error("{}: unsupported EROFS dirblkbits {} (must be 0)", name, dirblkbits);
  uint32_t unknown = info.feature_incompat & ~erofs_feature::kIncompatKnown;
  if (unknown != 0) {
    throw Error("{}: unknown EROFS incompatible feature bits {:#x}", name, unknown);
  }
  // 48BIT images keep the high 16 block-count bits where root_nid was (byte 14, u16).
  info.blocks = blocks_lo;
  if (info.feature_incompat & erofs_feature::kIncompat48Bit) {
    info.blocks |= static_cast<uint64_t>(le16(sb + 14)) << 32;
  }
  info.fs_size = info.blocks << info.blkszbits;
  if (info.blocks == 0) throw Error("{}: EROFS superblock says the filesystem has 0 blocks", name);
  if (info.fs_size > size) {
    throw Error("{}: truncated EROFS image: the filesystem is {} bytes ({} blocks of {}) but the "
                "file has only {}",
                name, info.fs_size, info.blocks, info.block_size(), size);
  }

  // The superblock block (or the first 4 KiB of a small-block image) for checksum + identity.
  uint64_t block_bytes = std::max<uint64_t>(info.block_size(), 4096);
  block_bytes = std::min(block_bytes, info.fs_size);
  std::string block(block_bytes, '\0');
  pread_exact(fd, block.data(), block.size(), offset, name);

  info.has_checksum = (info.feature_compat & erofs_feature::kCompatSbChksum) != 0;
  if (info.has_checksum) {
    uint64_t length = info.block_size() > kSuperblockOffset ? info.block_size() - kSuperblockOffset
                                                            : info.block_size();
    if (kSuperblockOffset + length > block.size()) {
      throw Error("{}: truncated EROFS image: the superblock checksum covers bytes past the end",
                  name);
    }
    std::string covered = block.substr(kSuperblockOffset, length);
    std::memset(covered.data() + 4, 0, 4);
    uint32_t computed = crc32c_update(~0u, covered.data(), covered.size());
    if (computed != info.checksum) {
      throw Error("{}: bad EROFS superblock checksum: stored {:#010x}, computed {:#010x}", name,
                  info.checksum, computed);
    }
  }

  bool has_table = (info.feature_incompat & erofs_feature::kIncompatDeviceTable) != 0;
  if (info.extra_devices > 0 && !has_table) {
    throw Error("{}: EROFS superblock lists {} extra devices but no device table feature", name,
                info.extra_devices);
  }
  if (has_table && info.extra_devices > 0) {
    uint64_t table_offset = static_cast<uint64_t>(info.devt_slotoff) * kDeviceSlotSize;
    uint64_t table_end = table_offset + info.extra_devices * kDeviceSlotSize;
    if (table_offset < kSuperblockOffset + 128 || table_end > info.fs_size) {
      throw Error("{}: EROFS device table at bytes {}..{} lies outside the image metadata", name,
                  table_offset, table_end);
    }
    std::string table(table_end - table_offset, '\0');
    pread_exact(fd, table.data(), table.size(), offset + table_offset, name);
    for (uint16_t i = 0; i < info.extra_devices; ++i) {
      const auto* slot = reinterpret_cast<const uint8_t*>(table.data()) + i * kDeviceSlotSize;
      DeviceSlot device;
      device.tag = printable(slot, 64);
      device.blocks = le32(slot + 64);
      device.mapped_blkaddr = le32(slot + 68);
      if (info.feature_incompat & erofs_feature::kIncompat48Bit) {
        device.blocks |= static_cast<uint64_t>(le16(slot + 72)) << 32;
        device.mapped_blkaddr |= static_cast<uint64_t>(le16(slot + 74)) << 32;
      }
      info.devices.push_back(std::move(device));
    }
  }
  info.identity = sha256_identity(block, info.fs_size, info.file_size);
  return info;
}

}  // namespace

std::string format_uuid(const std::array<uint8_t, 16>& u) {
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
      u[14], u[15]);
}

std::string feature_names(uint32_t compat, uint32_t incompat) {
  static constexpr std::pair<uint32_t, const char*> kCompat[] = {
      {erofs_feature::kCompatSbChksum, "sb_chksum"},
      {erofs_feature::kCompatMtime, "mtime"},
      {erofs_feature::kCompatXattrFilter, "xattr_filter"}};
  static constexpr std::pair<uint32_t, const char*> kIncompat[] = {
      {erofs_feature::kIncompatZeroPadding, "zero_padding"},
      {erofs_feature::kIncompatComprCfgs, "compr_cfgs"},
      {erofs_feature::kIncompatChunkedFile, "chunked_file"},
      {erofs_feature::kIncompatDeviceTable, "device_table"},
      {erofs_feature::kIncompatZtailpacking, "ztailpacking"},
      {erofs_feature::kIncompatFragments, "fragments"},
      {erofs_feature::kIncompatXattrPrefixes, "xattr_prefixes"},
      {erofs_feature::kIncompat48Bit, "48bit"}};
  std::string out;
  auto add = [&out](const char* name) {
    if (!out.empty()) out += ',';
    out += name;
  };
  for (auto [bit, name] : kCompat) if (compat & bit) add(name);
  for (auto [bit, name] : kIncompat) if (incompat & bit) add(name);
  return out;
}

ErofsInfo probe_image_at(int fd, uint64_t offset, uint64_t size, const std::string& name) {
  return parse_superblock(fd, offset, size, name);
}

ErofsInfo probe_layer(const std::string& path, const ProbeOptions& options) {
  // Never blocks on a FIFO; a device or other special file is refused before the first read.
  InputFile file = open_input_file(path, "file", options.allow_block_device
                                                      ? InputKind::RegularOrBlockDevice
                                                      : InputKind::RegularFile);
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
                       {"mapped_blkaddr", d.mapped_blkaddr}});
  }
  return nlohmann::json{{"path", info.path},
                        {"type", "erofs"},
                        {"block_size", info.block_size()},
                        {"blkszbits", info.blkszbits},
                        {"blocks", info.blocks},
                        {"fs_size", info.fs_size},
                        {"file_size", info.file_size},
                        {"uuid", info.uuid_string},
                        {"volume_name", info.volume_name},
                        {"feature_compat", info.feature_compat},
                        {"feature_incompat", info.feature_incompat},
                        {"features", feature_names(info.feature_compat, info.feature_incompat)},
                        {"checksum", info.has_checksum ? fmt::format("{:08x}", info.checksum)
                                                       : std::string()},
                        {"build_time", info.build_time},
                        {"extra_devices", info.extra_devices},
                        {"devt_slotoff", info.devt_slotoff},
                        {"devices", devices}};
}

}  // namespace evmdk::host
