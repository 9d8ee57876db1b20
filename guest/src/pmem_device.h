#pragma once
// Private to the driver: lowers on virtio-pmem (docs/guest.md "Layers on virtio-pmem"). The
// plan's rules for driver nvdimm and the DAX markers, finding the pmem device without a serial
// (by PCI address, or a bounded scan for the expected PARTUUID / EROFS UUID; never pmemN by
// number), and the check after the mount that DAX really took effect (EROFS falls back to the
// page cache silently).
#include <chrono>
#include <optional>
#include <string>
#include <utility>

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

// ---- A DAX lower whose image has extra devices on its one pmem device (a flat fsmeta disk).
// DAX needs every device of the mount to be a pmem device: only the kernel's EROFS
// flat-device mode (the extra devices read from the primary device at their mapped_blkaddr;
// Linux 6.4 added it) reads them from the pmem device itself. The other way, loop slices passed
// as device= (what the virtio-blk path does on older kernels), gives devices without DAX.

// The first kernel with flat-device mode.
inline constexpr std::pair<int, int> kFlatDeviceModeKernel{6, 4};

// This guest's kernel release (uname -r).
std::string kernel_release();

// (major, minor) of a kernel release ("6.1.0-57-amd64" -> 6, 1); nullopt when it does not
// start with two numbers.
std::optional<std::pair<int, int>> kernel_major_minor(const std::string& release);

// Whether kernel `release` has flat-device mode. A release that does not parse counts as
// having it: the flat mount is tried, and a refusal is handled as for an old kernel.
bool kernel_has_flat_device_mode(const std::string& release);

// When flat-device mode is not available to such a lower on `device` (`why`: the kernel is too
// old, or refused the mount): dax-fallback=error throws, before anything is mounted, naming the
// storage, the device, the kernel and what works instead (a gpt disk, or a kernel with
// flat-device mode); dax-fallback=warn returns the warning, and the caller mounts through loop
// slices without dax=always.
std::string refuse_or_warn_flat_dax(const LowerPlan& lower, const std::string& device,
                                    const std::string& release, const std::string& why);

// Mount data with the dax=always option taken out (for the slices of a DAX fallback).
std::string without_dax(const std::string& data);

}  // namespace evmdk::guest::detail
