#pragma once
// Private to the driver: lowers on virtio-pmem (docs/guest.md "Layers on virtio-pmem"). The
// plan's rules for driver nvdimm and the DAX markers, finding the pmem device without a serial
// (by PCI address, or a bounded scan for the expected PARTUUID / EROFS UUID; never pmemN by
// number), and the check after the mount that DAX really took effect (EROFS falls back to the
// page cache silently).
#include <chrono>
#include <optional>
#include <string>

#include "evmdk/guest/plan.h"

namespace evmdk::guest::detail {

// Most /sys/block/pmem* devices a scan looks at (each costs a probe of its first blocks).
inline constexpr unsigned kMaxPmemScan = 256;

// Validates a lower's pmem source and DAX markers (storage `name` for errors) and fills
// lower.pmem and lower.dax; with DAX, appends dax=always to lower.mount.data. Refuses: a pmem
// source without driver nvdimm and the reverse, /dev/pmemN, pmem-scan without the identity
// to match, DAX without nvdimm, and DAX together with dm-verity.
void plan_pmem_lower(const std::string& name, LowerPlan& lower);

// The whole pmem block device (/dev/pmemN) of a lower with lower.pmem set. Polls until
// `timeout`; throws naming the source (and, for a scan, what it saw) when none, or more than
// one, matches.
std::string find_pmem_device(const LowerPlan& lower, std::chrono::milliseconds timeout);

// What tells two lowers' disks apart in the disk cache: the source, and for pmem-scan the
// identity the scan matches.
std::string disk_cache_key(const LowerPlan& lower);

// After a DAX lower was mounted at `target` from `device`: whether mountinfo (the mount by its
// id) shows dax=always. Returns the warning when it does not and the storage says
// dax-fallback=warn; throws evmdk::Error naming the storage when it says error (the caller's
// rollback unmounts it); nullopt when DAX took effect.
std::optional<std::string> check_dax_took_effect(const LowerPlan& lower, const std::string& device,
                                                 const std::string& target);

}  // namespace evmdk::guest::detail
