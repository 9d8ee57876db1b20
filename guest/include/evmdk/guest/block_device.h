#pragma once
// Finding the layer disk in the guest and checking that a partition holds the layer the host
// meant: disk lookup by /dev path, serial, GPT disk GUID, Kata PCI path or SCSI address; bounded
// waits for partitions (with a partition-table re-read); PARTUUID via libblkid; the EROFS
// superblock (through the one on-disk parser, evmdk/ondisk/erofs.h).
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "evmdk/ondisk/erofs.h"
#include "evmdk/uuid.h"

namespace evmdk::guest {

// Resolves a Storage `source` to a block device node: an absolute /dev path, `serial:<S>`
// (the virtio-blk disk whose /sys/block/*/serial is S, or the SCSI disk whose VPD page 0x80
// says S), a Kata PCI path such as `02/00`, or a SCSI address: Kata's `<id>:<lun>` (channel 0)
// or `<host>:<channel>:<id>:<lun>`, or `gpt-disk-guid:<GUID>` (for VMMs that set no serial:
// the one whole vd*/xvd*/sd*/nvme*/loop* disk whose primary GPT header, CRC checked, has that
// disk GUID; disks that cannot be read are skipped, two matching disks are an error naming
// both). Polls until `timeout`; throws naming the source when it never shows up.
std::string find_disk(const std::string& source, std::chrono::milliseconds timeout);

// What the plan checks of a source before anything is done: a `gpt-disk-guid:` source must
// carry a canonical lower-case GUID (evmdk/contract/disk_source.h); throws evmdk::Error naming
// the source. Other forms are checked by find_disk.
void check_disk_source(const std::string& source);

// The device node of partition `number` of `disk` (e.g. /dev/vda, /dev/loop3). Waits with a
// bound; when the partition is not there it asks the kernel to re-read the partition table
// (BLKRRPART) and keeps waiting. Returns "" when a successful re-read still shows no such
// partition: the kernel does not parse this table (e.g. built without CONFIG_EFI_PARTITION),
// and the caller maps the partition itself (read_partition_table + a loop slice).
std::string wait_for_partition(const std::string& disk, unsigned number,
                               std::chrono::milliseconds timeout);

struct PartitionInfo {
  std::string uuid;    // GPT PARTUUID, lower case
  uint64_t start = 0;  // bytes from the start of the disk
  uint64_t size = 0;   // bytes
};

// Every partition of `disk` by number, as its partition table says (libblkid reads the table
// itself, so this does not depend on the kernel's partition parsing). One read serves all the
// lowers on a disk. Throws when the disk has no partition table.
std::map<unsigned, PartitionInfo> read_partition_table(const std::string& disk);

// One extra device of a multi-device (fsmeta) image: tag, blocks, mapped_blkaddr (48-bit aware).
using ErofsDevice = ondisk::ErofsDeviceSlot;

// Most extra devices a multi-device (fsmeta) image may declare: each can cost a loop device and
// a dm-verity device in the guest (the format allows 65,535). Far above compose's layer counts.
inline constexpr unsigned kMaxErofsExtraDevices = 1024;

// What the guest reads of a lower's EROFS image (parsed by common/ondisk/erofs.h).
struct ErofsImage {
  std::string uuid;  // 8-4-4-4-12 lower-case hex
  unsigned block_size_bits = 12;
  uint64_t blocks = 0;               // with 48BIT images, the high bits too
  std::vector<ErofsDevice> devices;  // extra devices (device id i+1), empty for one-device images
  uint64_t block_size() const { return uint64_t{1} << block_size_bits; }
  // blocks * block size, checked (48-bit block addresses times a 64 KiB block can overflow).
  uint64_t bytes(uint64_t count, const std::string& what) const;
};

// Reads and checks the EROFS superblock (and device table) at byte 0 of `path`.
ErofsImage read_erofs_superblock(const std::string& path);

// Size of a block device (or regular file) in bytes; 0 when it cannot be told.
uint64_t block_device_size(const std::string& path);

// Compares UUID strings ignoring case and dashes (evmdk/uuid.h).
using evmdk::same_uuid;

}  // namespace evmdk::guest
