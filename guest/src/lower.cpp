// The lower step: locate -> verify identity -> set up dm-verity devices and loop slices ->
// mount, one function per step (docs/guest.md "Mount", step 3).
#include "lower.h"

#include <sys/mount.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "evmdk/checked_math.h"
#include "evmdk/contract/dm_names.h"
#include "evmdk/contract/markers.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/loop_device.h"
#include "evmdk/guest/policy.h"
#include "evmdk/guest/verity.h"
#include "pmem_device.h"
#include "rootfs.h"

namespace evmdk::guest::detail {
namespace {

// ---------------------------------------------------------------------------------------
// Locating: disks and partitions, looked up once for all the lowers.

using PartitionTable = std::map<unsigned, PartitionInfo>;

struct DiskCache {
  std::mutex mutex;
  std::map<std::string, std::string> disks;         // source -> device node
  std::set<std::string> without_kernel_partitions;  // disks whose table the kernel ignores
  // disk -> its partition table, read once for all the lowers on it (the disk is read-only).
  std::map<std::string, std::shared_ptr<const PartitionTable>> tables;
  // (disk, partition number) -> its kernel node, or "" when the kernel shows no partitions.
  std::map<std::pair<std::string, unsigned>, std::string> partition_nodes;
};

PartitionInfo cached_partition(DiskCache& cache, const std::string& disk, unsigned number) {
  std::shared_ptr<const PartitionTable> table;
  {
    std::lock_guard lock(cache.mutex);
    auto found = cache.tables.find(disk);
    if (found != cache.tables.end()) table = found->second;
  }
  if (!table) {
    // Read outside the lock; two workers may both read it the first time, which is harmless.
    table = std::make_shared<const PartitionTable>(read_partition_table(disk));
    std::lock_guard lock(cache.mutex);
    cache.tables.emplace(disk, table);
  }
  auto found = table->find(number);
  if (found == table->end()) {
    throw Error("disk {}: the partition table has no partition {}", disk, number);
  }
  return found->second;
}

std::string resolve_disk(DiskCache& cache, const LowerPlan& lower,
                         std::chrono::milliseconds timeout) {
  std::string key = disk_cache_key(lower);  // a pmem scan's source alone names no disk
  {
    std::lock_guard lock(cache.mutex);
    auto it = cache.disks.find(key);
    if (it != cache.disks.end()) return it->second;
  }
  std::string disk =
      lower.pmem ? find_pmem_device(lower, timeout) : find_disk(lower.storage->source, timeout);
  std::lock_guard lock(cache.mutex);
  cache.disks[key] = disk;
  return disk;
}

// Finds every lower's disk and partition node before any lower is mounted, one at a time:
// waiting for a partition may ask the kernel to re-read the table, which drops and re-creates
// every partition node of the disk, so it must never run while another lower opens one (seen
// with lowers on a just hot-plugged disk: ENXIO on the partition, or a needless loop slice).
void locate_partitions(DiskCache& cache, const std::vector<LowerPlan>& lowers,
                       std::chrono::milliseconds timeout) {
  for (const auto& lower : lowers) {
    if (!lower.partition) continue;
    std::string disk;
    try {
      disk = resolve_disk(cache, lower, timeout);
    } catch (...) {
      rethrow_with_context("layer {} (storage '{}', partition {})", lower.index,
                           lower.storage->source, *lower.partition);
    }
    auto key = std::make_pair(disk, *lower.partition);
    if (cache.partition_nodes.count(key)) continue;
    std::string node = cache.without_kernel_partitions.count(disk)
                           ? std::string()
                           : wait_for_partition(disk, *lower.partition, timeout);
    if (node.empty()) cache.without_kernel_partitions.insert(disk);
    cache.partition_nodes.emplace(key, node);
  }
}

// ---------------------------------------------------------------------------------------
// dm-verity devices of one lower.

// Until the lower is mounted they are removed again if anything fails (newest first, under the
// session's device-mapper lock); once it is mounted, keep() hands them to the journal, and
// teardown removes them after the unmount.
class LowerVerityDevices {
 public:
  LowerVerityDevices(MountSession& session, LowersOutcome& outcome)
      : session_(session), outcome_(outcome) {}
  LowerVerityDevices(const LowerVerityDevices&) = delete;
  LowerVerityDevices& operator=(const LowerVerityDevices&) = delete;
  ~LowerVerityDevices() { (void)remove_all(); }

  // Returns the path to mount or pass as device=.
  std::string activate(const std::string& name, const std::string& data_device,
                       const std::string& hash_device, const VerityParams& params) {
    session_.will_activate_verity(name);
    auto device_mapper = session_.lock_device_mapper();
    const Policy& policy = session_.policy();
    devices_.push_back(
        VerityDevice::activate(name, data_device, hash_device, params,
                               [&](const std::string& algorithm, const std::string& where) {
                                 check_verity_algorithm(policy, algorithm, where);
                               }));
    outcome_.verity_devices.push_back(name);
    return devices_.back().path();
  }
  // Removes every device now; returns what could not be removed (empty when all went).
  std::string remove_all() {
    std::string problems;
    if (devices_.empty()) return problems;
    auto device_mapper = session_.lock_device_mapper();
    for (auto it = devices_.rbegin(); it != devices_.rend(); ++it) {
      std::string name = it->name();
      try {
        it->remove();
      } catch (const std::exception& error) {
        problems += fmt::format(" (and removing {} failed: {})", name, error.what());
      }
    }
    devices_.clear();
    return problems;
  }
  void keep() {
    for (auto& device : devices_) device.release();
    devices_.clear();
  }

 private:
  MountSession& session_;
  LowersOutcome& outcome_;
  std::vector<VerityDevice> devices_;
};

// ---------------------------------------------------------------------------------------
// One lower, step by step.

// Where one extra device of a multi-device image lies on the device holding the image.
struct DeviceRange {
  uint64_t offset = 0;  // bytes
  uint64_t size = 0;
};

class LowerMount {
 public:
  LowerMount(MountSession& session, DiskCache& cache, const LowerPlan& lower,
             const std::string& target, const MountRequest& request)
      : session_(session),
        cache_(cache),
        lower_(lower),
        storage_(*lower.storage),
        target_(target),
        request_(request),
        verity_(session, outcome_) {}

  LowersOutcome run() {
    locate();
    verify_partition_identity();
    map_partition_without_kernel_node();
    verify_erofs_identity();
    if (superblock_.devices.empty()) {
      mount_single_device();
    } else {
      mount_multi_device();
    }
    if (dax_fallback_) {  // mounted through slices without DAX, as the storage allows
      outcome_.dax[target_] = "fallback";
      outcome_.warnings.push_back(*dax_fallback_);
    } else if (lower_.dax) {  // EROFS falls back to the page cache silently: mountinfo tells
      auto warning = check_dax_took_effect(lower_, device_, target_);
      outcome_.dax[target_] = warning ? "fallback" : "always";
      if (warning) outcome_.warnings.push_back(*warning);
    }
    return outcome_;
  }

 private:
  // ---- locate: the disk, and the partition's kernel node and table entry.
  void locate() {
    disk_ = resolve_disk(cache_, lower_, request_.device_timeout);
    device_ = disk_;
    if (!lower_.partition) return;
    {
      // locate_partitions found it before the workers started.
      std::lock_guard lock(cache_.mutex);
      auto found = cache_.partition_nodes.find({disk_, *lower_.partition});
      if (found == cache_.partition_nodes.end()) throw Error("partition was not located first");
      device_ = found->second;
    }
    partition_ = cached_partition(cache_, disk_, *lower_.partition);
  }

  // ---- verify identity: the partition and the image are the ones the host meant.
  void verify_partition_identity() const {
    if (!partition_) return;
    if (auto expected = option_value(storage_.options, marker::kPartUuid)) {
      if (!same_uuid(partition_->uuid, *expected)) {
        throw Error("PARTUUID mismatch on {} partition {}: expected {}, found {}", disk_,
                    *lower_.partition, *expected,
                    partition_->uuid.empty() ? "none" : partition_->uuid);
      }
    }
  }

  // The kernel does not expose this disk's partitions: map the slice the table names.
  void map_partition_without_kernel_node() {
    if (!partition_ || !device_.empty()) return;
    partition_slice_ = LoopDevice::attach(disk_, partition_->start, partition_->size,
                                          contract::loop_tag(session_.container_id()));
    session_.attached_loop(partition_slice_, disk_);
    device_ = partition_slice_.path();
    outcome_.loops.push_back(device_);
  }

  void verify_erofs_identity() {
    superblock_ = read_erofs_superblock(device_);
    if (auto expected = option_value(storage_.options, marker::kErofsUuid)) {
      if (!same_uuid(superblock_.uuid, *expected)) {
        throw Error("EROFS UUID mismatch on {}: expected {}, found {}", device_, *expected,
                    superblock_.uuid);
      }
    }
  }

  // ---- mount a one-device image: directly, or through its dm-verity device.
  void mount_single_device() {
    if (!lower_.device_verity.empty()) {
      throw Error(
          "{} is a single-device EROFS image, but the storage has dm-verity options for "
          "its device {}",
          device_, lower_.device_verity.begin()->first);
    }
    std::string source = device_;
    if (lower_.verity) {
      source = verity_.activate(verity_name(), device_, device_, *lower_.verity);
    }
    const MountOptions& options = lower_.mount;
    if (!mount_erofs(source, options.data)) {
      std::string error = mount_error("EROFS", source, target_, options.data);
      throw Error("{}{}", error, verity_.remove_all());
    }
    verity_.keep();
    session_.mounted(target_);
  }

  // ---- a multi-device image whose extra devices lie on the device holding it: an fsmeta
  // with its blobs on one flat disk, or a tar-index layer (its one device is the tar appended
  // to the index in the same file) on a disk or partition. Kernels 6.4+ read the extra devices
  // from the primary device at mapped_blkaddr when no device= is given; older ones refuse such
  // a mount (EINVAL; 6.1 also refuses the tar-index layer's empty device tag), and then get
  // read-only loop slices plus device= options. With dm-verity every device must be read
  // through its verity device, so only the device= form will do. A DAX lower (on pmem) gets
  // flat-device mode or nothing: loop slices cannot do DAX (mount_dax_flat_device_mode).
  void mount_multi_device() {
    check_device_table_verity();
    check_device_ranges();
    bool any_verity = lower_.verity || !lower_.device_verity.empty();
    std::string flat_error =
        any_verity ? "not tried: dm-verity needs device= options" : "not tried";
    std::string base_data = lower_.mount.data;
    if (lower_.dax) {  // the plan refused DAX with dm-verity
      if (mount_dax_flat_device_mode(flat_error)) return;
      base_data = without_dax(base_data);
    } else if (request_.try_flat_device_mode && !any_verity && mount_flat_device_mode(flat_error)) {
      return;
    }
    std::string source = set_up_fsmeta();
    std::string data = device_options(base_data);
    if (!mount_erofs(source, data)) {
      std::string error = mount_error("EROFS", source, target_, data);
      throw Error("{} (flat-device mount failed first: {}){}", error, flat_error,
                  verity_.remove_all());
    }
    verity_.keep();
    session_.mounted(target_);
    // The mount holds the slices now; autoclear releases them when it is unmounted.
  }

  // The storage's dm-verity options must fit the device table the image really has, and the
  // policy may require one for every device.
  void check_device_table_verity() const {
    size_t devices = superblock_.devices.size();
    for (size_t slot = 1; slot <= devices; ++slot) {
      check_device_verity(session_.policy(),
                          lower_.device_verity.count(static_cast<unsigned>(slot)) != 0,
                          fmt::format("{} device {}", device_, slot));
    }
    for (const auto& [slot, params] : lower_.device_verity) {
      if (slot > devices) {
        throw Error(
            "the storage has dm-verity options for device {}, but {}'s device table has "
            "{} devices",
            slot, device_, devices);
      }
      if (params.no_superblock) {
        throw Error(
            "device {}: {}no-superblock is not supported on a flat disk (its data area "
            "is not the start of the disk; compose writes a verity superblock)",
            slot, device_option_prefix(slot) + "dmverity.");
      }
    }
    if (lower_.verity && lower_.verity->no_superblock) {
      throw Error(
          "{}: {} is not supported for a multi-device (fsmeta) image on a flat disk; compose "
          "writes a verity superblock",
          device_, marker::kDmverityNoSuperblock);
    }
  }

  // Every extra device must be mapped (mapped_blkaddr and blocks) inside what holds the image
  // -- the partition, the disk, or its loop slice -- before either mount is tried: the blobs
  // after a flat disk's fsmeta, or the tar a tar-index layer appends to its own index. Without
  // a mapping, flat-device mode would make the kernel open each device by its tag instead.
  void check_device_ranges() {
    uint64_t holder_bytes = block_device_size(device_);
    std::string holder =
        partition_ ? fmt::format("partition {}", device_) : fmt::format("disk {}", device_);
    if (holder_bytes == 0) {
      throw Error("cannot tell the size of {}, so the device table's ranges cannot be checked",
                  holder);
    }
    device_ranges_.clear();
    for (size_t i = 0; i < superblock_.devices.size(); ++i) {
      const ErofsDevice& entry = superblock_.devices[i];
      std::string slot_name = fmt::format("{} device {}", device_, i + 1);
      if (entry.mapped_blkaddr == 0 || entry.blocks == 0) {
        throw Error(
            "{} is a multi-device EROFS image but device {} has no mapped_blkaddr/blocks in its "
            "device table, so it cannot be read from the {} that holds the image",
            device_, i + 1, partition_ ? "partition" : "disk");
      }
      uint64_t offset = superblock_.bytes(entry.mapped_blkaddr, slot_name + " offset");
      uint64_t size = superblock_.bytes(entry.blocks, slot_name + " size");
      uint64_t end = add_or_throw(offset, size, slot_name + " end");
      if (end > holder_bytes) {
        throw Error("{}: bytes {}..{} lie beyond the end of the {} ({} bytes)", slot_name, offset,
                    end, holder, holder_bytes);
      }
      device_ranges_.push_back({offset, size});
    }
  }

  // True when the kernel mounted the image from the one disk; otherwise `why_not` says why.
  bool mount_flat_device_mode(std::string& why_not) {
    if (!mount_erofs(device_, lower_.mount.data)) {
      why_not = std::strerror(errno);
      return false;
    }
    outcome_.flat_device_mode = true;
    session_.mounted(target_);
    return true;
  }

  // A DAX lower with extra devices: flat-device mode where the kernel has it. Without it
  // (an old kernel: refused before any mount is tried; or the kernel refused the flat mount),
  // the storage's dax-fallback says: error throws, warn records the warning in dax_fallback_
  // and returns false, and the caller mounts through loop slices without dax=always.
  bool mount_dax_flat_device_mode(std::string& why_not) {
    std::string release = kernel_release();
    std::string why;
    if (!request_.try_flat_device_mode) {
      why = "flat-device mode was turned off for this mount";
    } else if (!kernel_has_flat_device_mode(release)) {
      why = "this kernel has no flat-device mode";
    } else if (mount_flat_device_mode(why_not)) {
      return true;
    } else {
      why = "the kernel refused the flat-device mount (" + why_not + ")";
    }
    dax_fallback_ = refuse_or_warn_flat_dax(lower_, device_, release, why);
    why_not = why;
    return false;
  }

  // The device to mount: the disk, or the fsmeta's dm-verity device.
  std::string set_up_fsmeta() {
    if (!lower_.verity) return device_;
    try {
      uint64_t size = superblock_.bytes(superblock_.blocks, "the fsmeta's size");
      return activate_on_disk(verity_name(), 0, size, *lower_.verity);
    } catch (...) {
      rethrow_with_context("the fsmeta (primary device, {} blocks)", superblock_.blocks);
    }
  }

  // The mount data with one device=<path> per extra device: a loop slice of the disk at the
  // slot's mapped_blkaddr, or a dm-verity device over one.
  std::string device_options(std::string data) {
    for (size_t i = 0; i < superblock_.devices.size(); ++i) {
      unsigned slot = static_cast<unsigned>(i + 1);
      std::string path = set_up_device_slot(slot, superblock_.devices[i], device_ranges_.at(i));
      data += (data.empty() ? "" : ",") + ("device=" + path);
    }
    return data;
  }

  // A loop slice (or a dm-verity device over one) of the checked range of device `slot`.
  std::string set_up_device_slot(unsigned slot, const ErofsDevice& entry,
                                 const DeviceRange& range) {
    auto [offset, size] = range;
    auto params = lower_.device_verity.find(slot);
    if (params == lower_.device_verity.end()) return attach_slice(offset, size);
    try {
      return activate_on_disk(verity_name(slot), offset, size, params->second);
    } catch (...) {
      rethrow_with_context("device {} ({} blocks at block {})", slot, entry.blocks,
                           entry.mapped_blkaddr);
    }
  }

  // ---- loop slices and verity devices over the flat disk.
  std::string attach_slice(uint64_t offset, uint64_t size) {
    slices_.push_back(
        LoopDevice::attach(device_, offset, size, contract::loop_tag(session_.container_id())));
    session_.attached_loop(slices_.back(), device_);
    outcome_.loops.push_back(slices_.back().path());
    return slices_.back().path();
  }

  // A verity device over a flat disk: the data through a slice of its own, and the hash area
  // through a slice from its disk offset to the end of the disk, so no two dm devices share a
  // device (libcryptsetup opens the data device exclusively).
  std::string activate_on_disk(const std::string& name, uint64_t data_offset, uint64_t data_size,
                               const VerityParams& params) {
    std::string data_slice = attach_slice(data_offset, data_size);
    std::string hash_slice = attach_slice(params.hash_offset, 0);
    VerityParams on_slice = params;
    on_slice.hash_offset = 0;
    return verity_.activate(name, data_slice, hash_slice, on_slice);
  }

  // mount(2) of EROFS `source` at the target with the lower's flags; false with errno set.
  bool mount_erofs(const std::string& source, const std::string& data) const {
    return ::mount(source.c_str(), target_.c_str(), "erofs", lower_.mount.flags, data.c_str()) == 0;
  }

  // The dm name of the lower's own device (the fsmeta on a flat disk), or of extra device
  // `slot`; check_verity_names_fit made sure they fit.
  std::string verity_name(std::optional<uint32_t> slot = std::nullopt) const {
    return contract::verity_device_name(session_.container_id(), {lower_.index, slot});
  }

  MountSession& session_;
  DiskCache& cache_;
  const LowerPlan& lower_;
  const Storage& storage_;
  const std::string& target_;
  const MountRequest& request_;

  std::string disk_;
  std::optional<PartitionInfo> partition_;
  std::string device_;  // what holds the image: the disk, its partition, or a slice of it
  std::vector<DeviceRange> device_ranges_;   // of each extra device, checked to lie on device_
  ErofsImage superblock_;                    // the image's superblock and device table
  std::optional<std::string> dax_fallback_;  // why a DAX lower went through slices (warn)
  LowersOutcome outcome_;
  // Declared before the verity devices, so those (which read through the slices) go first.
  LoopDevice partition_slice_;
  std::vector<LoopDevice> slices_;
  LowerVerityDevices verity_;
};

LowersOutcome mount_lower(MountSession& session, DiskCache& cache, const LowerPlan& lower,
                          const std::string& target, const MountRequest& request) {
  try {
    return LowerMount(session, cache, lower, target, request).run();
  } catch (...) {
    rethrow_with_context("layer {} (storage '{}'{})", lower.index, lower.storage->source,
                         lower.partition ? fmt::format(", partition {}", *lower.partition) : "");
  }
}

void merge(LowersOutcome& into, const LowersOutcome& from) {
  into.loops.insert(into.loops.end(), from.loops.begin(), from.loops.end());
  into.verity_devices.insert(into.verity_devices.end(), from.verity_devices.begin(),
                             from.verity_devices.end());
  into.flat_device_mode = into.flat_device_mode || from.flat_device_mode;
  into.dax.insert(from.dax.begin(), from.dax.end());
  into.warnings.insert(into.warnings.end(), from.warnings.begin(), from.warnings.end());
}

}  // namespace

void check_verity_names_fit(const std::vector<LowerPlan>& lowers, const std::string& container_id) {
  for (const auto& lower : lowers) {
    if (!lower.verity && lower.device_verity.empty()) continue;
    contract::VerityDeviceName longest{lower.index, std::nullopt};
    if (!lower.device_verity.empty()) longest.slot = lower.device_verity.rbegin()->first;
    (void)contract::verity_device_name(container_id, longest);  // throws when too long
  }
}

LowersOutcome mount_lowers(MountSession& session, const std::vector<LowerPlan>& lowers,
                           const std::vector<std::string>& paths, const MountRequest& request) {
  LowersOutcome outcome;
  if (lowers.empty()) return outcome;
  DiskCache disks;
  locate_partitions(disks, lowers, request.device_timeout);
  std::atomic<size_t> next{0};
  std::mutex outcome_mutex;
  std::exception_ptr first_error;
  auto worker = [&] {
    while (true) {
      size_t i = next.fetch_add(1);
      if (i >= lowers.size()) return;
      try {
        LowersOutcome one = mount_lower(session, disks, lowers[i], paths[i], request);
        std::lock_guard lock(outcome_mutex);
        merge(outcome, one);
      } catch (...) {
        std::lock_guard lock(outcome_mutex);
        if (!first_error) first_error = std::current_exception();
        next = lowers.size();  // stop handing out work
      }
    }
  };
  std::vector<std::thread> threads;
  size_t parallel = std::clamp<size_t>(request.parallel_mounts, 1, lowers.size());
  for (size_t t = 0; t < parallel; ++t) threads.emplace_back(worker);
  for (auto& thread : threads) thread.join();
  if (first_error) std::rethrow_exception(first_error);
  session.save();  // the loop devices, for status and teardown
  return outcome;
}

}  // namespace evmdk::guest::detail
