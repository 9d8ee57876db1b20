#include "evmdk/guest/block_device.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <fmt/ranges.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include "disk_scan.h"
#include "evmdk/blkid_ptr.h"
#include "evmdk/checked_math.h"
#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace fs = std::filesystem;

namespace evmdk::guest {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(20);

std::string read_trimmed(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

bool is_block_device(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

// A SCSI disk's unit serial number: VPD page 0x80 (4-byte header, the length in byte 3, then
// the serial, space padded). QEMU's scsi-hd `serial=` lands here, not in /sys/block/*/serial.
std::string scsi_vpd_serial(const fs::path& block_dir) {
  std::ifstream in(block_dir / "device" / "vpd_pg80", std::ios::binary);
  if (!in) return {};
  std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (page.size() < 4 || static_cast<unsigned char>(page[1]) != 0x80) return {};
  std::string serial = page.substr(4, static_cast<unsigned char>(page[3]));
  while (!serial.empty() && (serial.back() == ' ' || serial.back() == '\0')) serial.pop_back();
  size_t start = serial.find_first_not_of(' ');
  return start == std::string::npos ? std::string() : serial.substr(start);
}

std::string find_by_serial(const std::string& serial) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/block", ec)) {
    if (read_trimmed(entry.path() / "serial") == serial ||
        scsi_vpd_serial(entry.path()) == serial) {
      return "/dev/" + entry.path().filename().string();
    }
  }
  return {};
}

// A SCSI address: Kata's "<scsi-id>:<lun>" (channel 0 of any host) or a full
// "<host>:<channel>:<id>:<lun>".
struct ScsiAddress {
  std::vector<unsigned> parts;  // 2 or 4 numbers
};

std::optional<ScsiAddress> parse_scsi_address(const std::string& text) {
  ScsiAddress address;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t colon = text.find(':', pos);
    std::string part =
        text.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || ec != std::errc() || end != part.data() + part.size()) return std::nullopt;
    address.parts.push_back(value);
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  if (address.parts.size() != 2 && address.parts.size() != 4) return std::nullopt;
  return address;
}

// The disk at that address (/sys/bus/scsi/devices/H:C:T:L/block/<name>). Kata's short form
// matches channel 0 of every host; two hosts with a disk there is an error, not a guess.
std::string find_by_scsi_address(const ScsiAddress& address, const std::string& source) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/bus/scsi/devices", ec)) {
    auto hctl = parse_scsi_address(entry.path().filename().string());
    if (!hctl || hctl->parts.size() != 4) continue;
    bool match = address.parts.size() == 4
                     ? hctl->parts == address.parts
                     : hctl->parts[1] == 0 && hctl->parts[2] == address.parts[0] &&
                           hctl->parts[3] == address.parts[1];
    if (!match) continue;
    for (const auto& block : fs::directory_iterator(entry.path() / "block", ec)) {
      found.push_back("/dev/" + block.path().filename().string());
    }
  }
  if (found.size() > 1) {
    throw Error(
        "storage source '{}': more than one SCSI disk has that address ({}); give the "
        "full host:channel:id:lun",
        source, fmt::join(found, ", "));
  }
  return found.empty() ? std::string() : found.front();
}

// Asks every SCSI host to scan for the address (a disk attached before the driver probed it
// may need it); best effort.
void request_scsi_scan(const ScsiAddress& address) {
  std::string channel = address.parts.size() == 4 ? std::to_string(address.parts[1]) : "0";
  unsigned id = address.parts[address.parts.size() - 2], lun = address.parts.back();
  std::error_code ec;
  for (const auto& host : fs::directory_iterator("/sys/class/scsi_host", ec)) {
    if (address.parts.size() == 4 &&
        host.path().filename().string() != fmt::format("host{}", address.parts[0])) {
      continue;
    }
    std::ofstream scan(host.path() / "scan");
    if (scan) scan << fmt::format("{} {} {}\n", channel, id, lun);
  }
}

// Kata PCI path "bb/dd[/...]": slot of each bridge from the root bus down to the device.
std::string find_by_pci_path(const std::string& pci_path) {
  std::vector<unsigned> slots;
  size_t pos = 0;
  while (pos <= pci_path.size()) {
    size_t slash = pci_path.find('/', pos);
    std::string part =
        pci_path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    if (part.empty() || part.size() > 2 || !std::all_of(part.begin(), part.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c));
        })) {
      throw Error("storage source '{}': not a PCI path (expected hex slots like 02/00)", pci_path);
    }
    slots.push_back(static_cast<unsigned>(std::stoul(part, nullptr, 16)));
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  std::error_code ec;
  fs::path dir;
  for (const auto& root : fs::directory_iterator("/sys/devices", ec)) {
    if (root.path().filename().string().rfind("pci0000:00", 0) == 0) dir = root.path();
  }
  if (dir.empty()) return {};
  for (unsigned slot : slots) {
    fs::path next;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      // Device directories are named DDDD:BB:SS.F; function 0 of the slot.
      std::string name = entry.path().filename().string();
      if (name.size() == 12 && name[4] == ':' && name[7] == ':' && name[10] == '.' &&
          name[11] == '0' && std::stoul(name.substr(8, 2), nullptr, 16) == slot) {
        next = entry.path();
      }
    }
    if (next.empty()) return {};
    dir = next;
  }
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (entry.path().parent_path().filename() == "block") {
      return "/dev/" + entry.path().filename().string();
    }
  }
  return {};
}

std::string partition_node(const std::string& disk, unsigned number) {
  std::string name = fs::path(disk).filename().string();
  // The kernel's names first (vda3, nvme0n1p3, loop0p3): one lookup instead of a scan of every
  // partition of the disk, which made 128 lowers cost 128 x 128 sysfs reads.
  bool ends_in_digit = !name.empty() && std::isdigit(static_cast<unsigned char>(name.back()));
  std::string guess = fmt::format("{}{}{}", name, ends_in_digit ? "p" : "", number);
  fs::path guessed = fs::path("/sys/class/block") / name / guess;
  if (read_trimmed(guessed / "partition") == std::to_string(number) &&
      is_block_device("/dev/" + guess)) {
    return "/dev/" + guess;
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path("/sys/class/block") / name, ec)) {
    if (read_trimmed(entry.path() / "partition") == std::to_string(number)) {
      std::string node = "/dev/" + entry.path().filename().string();
      if (is_block_device(node)) return node;
    }
  }
  return {};
}

// True when the kernel re-read the table (it adds the partitions before returning); false on
// EBUSY (partitions in use) or other errors.
bool reread_partition_table(const std::string& disk) {
  UniqueFd fd(::open(disk.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  return ::ioctl(fd.get(), BLKRRPART, 0) == 0;
}

// gpt-disk-guid:<GUID>: the one whole disk whose primary GPT header has that disk GUID.
std::string find_by_gpt_disk_guid(const std::string& source, std::chrono::milliseconds timeout) {
  const ondisk::Guid guid = contract::decode_gpt_disk_guid_source(source);
  auto deadline = Clock::now() + timeout;
  while (true) {
    detail::GptScan scan = detail::scan_gpt_disk_guid(guid);
    if (scan.matches.size() > 1) {
      throw Error(
          "storage source '{}': {} disks have that GPT disk GUID ({}); refusing to pick one "
          "(each composed disk in a VM needs its own disk GUID: the hook salts it per "
          "container)",
          source, scan.matches.size(), fmt::join(scan.matches, ", "));
    }
    if (!scan.matches.empty()) return scan.matches.front();
    if (Clock::now() >= deadline) {
      throw Error(
          "storage source '{}': no disk whose primary GPT header has disk GUID {} after {} ms "
          "({} whole disks read, {} could not be read)",
          source, ondisk::format_guid(guid), timeout.count(), scan.read, scan.skipped);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

void check_disk_source(const std::string& source) {
  if (contract::is_gpt_disk_guid_source(source))
    (void)contract::decode_gpt_disk_guid_source(source);
}

std::string find_disk(const std::string& source, std::chrono::milliseconds timeout) {
  if (contract::is_gpt_disk_guid_source(source)) return find_by_gpt_disk_guid(source, timeout);
  auto deadline = Clock::now() + timeout;
  bool by_serial = source.rfind("serial:", 0) == 0;
  bool by_path = !source.empty() && source[0] == '/';
  std::optional<ScsiAddress> scsi =
      by_serial || by_path ? std::nullopt : parse_scsi_address(source);
  if (!by_serial && !by_path && !scsi &&
      source.find_first_not_of("0123456789abcdefABCDEF/") != std::string::npos) {
    throw Error(
        "storage source '{}': expected an absolute /dev path, serial:<S>, {}<GUID>, a PCI "
        "path (02/00) or a SCSI address (<id>:<lun> or <host>:<channel>:<id>:<lun>)",
        source, contract::kGptDiskGuidSourcePrefix);
  }
  bool scan_requested = false;
  while (true) {
    std::string found;
    if (scsi) {
      found = find_by_scsi_address(*scsi, source);
      if (!found.empty() && !is_block_device(found)) found.clear();
      if (found.empty() && !scan_requested) {
        request_scsi_scan(*scsi);
        scan_requested = true;
      }
    } else if (by_path) {
      if (is_block_device(source)) found = source;
    } else if (by_serial) {
      found = find_by_serial(source.substr(7));
      if (!found.empty() && !is_block_device(found)) found.clear();
    } else {
      found = find_by_pci_path(source);
      if (!found.empty() && !is_block_device(found)) found.clear();
    }
    if (!found.empty()) return found;
    if (Clock::now() >= deadline) {
      throw Error("storage source '{}': no such block device after {} ms", source, timeout.count());
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string wait_for_partition(const std::string& disk, unsigned number,
                               std::chrono::milliseconds timeout) {
  auto start = Clock::now();
  auto deadline = start + timeout;
  auto next_reread = start;  // a missing partition is re-read at once, then every 500 ms
  while (true) {
    std::string node = partition_node(disk, number);
    if (!node.empty()) return node;
    auto now = Clock::now();
    if (now >= deadline) {
      throw Error(
          "disk {}: partition {} did not appear within {} ms (partition table re-read "
          "requested)",
          disk, number, timeout.count());
    }
    if (now >= next_reread) {
      if (reread_partition_table(disk)) {
        node = partition_node(disk, number);
        if (!node.empty()) return node;
        return {};  // the kernel parsed the table and has no such partition
      }
      next_reread = now + std::chrono::milliseconds(500);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::map<unsigned, PartitionInfo> read_partition_table(const std::string& disk) {
  BlkidProbePtr probe(blkid_new_probe_from_filename(disk.c_str()));
  if (!probe) throw_errno("libblkid cannot open {}", disk);
  blkid_probe_enable_superblocks(probe.get(), 0);
  blkid_probe_enable_partitions(probe.get(), 1);
  blkid_partlist list = blkid_probe_get_partitions(probe.get());
  if (list == nullptr) throw Error("disk {}: no partition table found by libblkid", disk);
  std::map<unsigned, PartitionInfo> table;
  int count = blkid_partlist_numof_partitions(list);
  for (int i = 0; i < count; ++i) {
    blkid_partition part = blkid_partlist_get_partition(list, i);
    PartitionInfo info;
    if (const char* uuid = blkid_partition_get_uuid(part)) info.uuid = uuid;
    std::transform(info.uuid.begin(), info.uuid.end(), info.uuid.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    blkid_loff_t start = blkid_partition_get_start(part), size = blkid_partition_get_size(part);
    int number = blkid_partition_get_partno(part);
    std::string what = fmt::format("disk {} partition {}", disk, number);
    if (start < 0 || size < 0 || number < 1)
      throw Error("{}: invalid start {} or size {}", what, start, size);
    info.start = mul_or_throw<uint64_t>(static_cast<uint64_t>(start), 512, what + " start");
    info.size = mul_or_throw<uint64_t>(static_cast<uint64_t>(size), 512, what + " size");
    add_or_throw(info.start, info.size, what + " end");
    table[static_cast<unsigned>(blkid_partition_get_partno(part))] = std::move(info);
  }
  return table;
}

ErofsImage read_erofs_superblock(const std::string& path) {
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  std::array<uint8_t, ondisk::erofs::kSuperblockSize> block{};
  pread_exact(fd.get(), block.data(), block.size(), ondisk::erofs::kSuperblockOffset,
              path + " (EROFS superblock)");
  ondisk::ErofsSuperblock sb = ondisk::parse_erofs_superblock(block, path);
  ErofsImage out;
  out.block_size_bits = sb.blkszbits;
  out.blocks = sb.blocks;
  out.uuid = format_uuid(sb.uuid);
  if (!sb.has_device_table() || sb.extra_devices == 0) return out;
  if (sb.extra_devices > kMaxErofsExtraDevices) {
    // Each extra device may become a loop device (and a dm-verity device): bounded.
    throw Error("{}: the EROFS device table declares {} extra devices; at most {} are supported",
                path, sb.extra_devices, kMaxErofsExtraDevices);
  }
  std::vector<uint8_t> table(sb.device_table_size());
  pread_exact(fd.get(), table.data(), table.size(), sb.device_table_offset(),
              path + " (EROFS device table)");
  out.devices = ondisk::parse_erofs_device_table(table, sb, path);
  return out;
}

uint64_t ErofsImage::bytes(uint64_t count, const std::string& what) const {
  return mul_or_throw(count, block_size(), what);
}

uint64_t block_device_size(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return 0;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return 0;
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  uint64_t bytes = 0;
  return ::ioctl(fd.get(), BLKGETSIZE64, &bytes) == 0 ? bytes : 0;
}

}  // namespace evmdk::guest
