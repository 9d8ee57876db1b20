#pragma once
// Private to the driver: finding a whole disk by the disk GUID of its primary GPT header, for
// sources `gpt-disk-guid:<GUID>` (evmdk/contract/disk_source.h): VMMs such as Firecracker give
// a virtio-blk disk no serial, so the guest recognises the composed disk by its content.
#include <string>
#include <vector>

#include "evmdk/ondisk/gpt.h"

namespace evmdk::guest::detail {

// Most whole disks one scan reads (each costs one sector read).
inline constexpr unsigned kMaxGptScan = 1024;

struct GptScan {
  std::vector<std::string> matches;  // /dev/<name> of every disk with that GUID
  unsigned read = 0;                 // disks whose LBA 1 was read
  unsigned skipped = 0;              // candidates that could not be opened or read
};

// Every whole disk in /sys/class/block named vd*, xvd*, sd*, nvme* or loop* (partitions
// skipped) whose primary GPT header, at LBA 1 of its logical block size, has a valid signature
// and CRC and disk GUID `guid`. A disk that cannot be opened or read is counted and skipped.
GptScan scan_gpt_disk_guid(const ondisk::Guid& guid);

}  // namespace evmdk::guest::detail
