#include "evmdk/guest/driver.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "evmdk/contract/container_id.h"
#include "evmdk/checked_math.h"
#include "evmdk/error.h"
#include "evmdk/guest/bind_source.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/cgroup.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/loop_device.h"
#include "evmdk/guest/mkdir_directive.h"
#include "evmdk/guest/mountinfo.h"
#include "evmdk/guest/plan.h"
#include "evmdk/guest/safe_path.h"
#include "rootfs.h"
#include "teardown.h"
#include "evmdk/guest/verity.h"
#include "evmdk/unique_fd.h"


namespace evmdk::guest {
namespace {

using detail::bind_rootfs;
using detail::mount_error;
using detail::mount_overlay;
using detail::mount_virtiofs;

// Size of a block device (or file) in bytes; 0 when it cannot be told.
uint64_t block_device_bytes(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return 0;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return 0;
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  uint64_t bytes = 0;
  return ::ioctl(fd.get(), BLKGETSIZE64, &bytes) == 0 ? bytes : 0;
}

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// State shared by the steps of one mount: the journal, kept on disk after every change.

class MountSession {
 public:
  MountSession(Journal journal, std::string crash_after, const Policy& policy)
      : journal_(std::move(journal)), crash_after_(std::move(crash_after)), policy_(policy) {}

  const Policy& policy() const { return policy_; }

  void created_dir(const std::string& path) {
    std::lock_guard lock(mutex_);
    journal_.created_dirs.push_back(path);
  }
  void will_activate_verity(const std::string& name) {
    std::lock_guard lock(mutex_);
    journal_.verity_devices.push_back(name);
    save_journal(journal_);
  }
  const std::string& container_id() const { return journal_.container_id; }
  // libcryptsetup (and the libdevmapper under it) keeps process-wide state and is not safe to
  // call from the concurrent lower workers: two activations at once crashed the driver in the
  // guest (guest_verity_mount_qemu_test). Activations take turns; the mounts stay concurrent.
  [[nodiscard]] std::unique_lock<std::mutex> lock_device_mapper() {
    return std::unique_lock<std::mutex>(device_mapper_mutex_);
  }
  // Saved after the lowers: until a mount holds it, an autoclear loop device is released by
  // the kernel when this process dies, and the unmount releases it afterwards.
  void attached_loop(const LoopDevice& loop, const std::string& backing) {
    const LoopIdentity& id = loop.identity();
    std::lock_guard lock(mutex_);
    journal_.loops.push_back({loop.path(), backing, id.offset, id.backing_dev, id.backing_ino, id.diskseq});
  }
  void will_mount_all(const std::vector<JournalMount>& mounts) {
    std::lock_guard lock(mutex_);
    journal_.mounts.insert(journal_.mounts.end(), mounts.begin(), mounts.end());
    save_journal(journal_);
  }
  // Records the id of the mount just made at `path` (the topmost there, reached without
  // symlinks): teardown finds it by that id wherever it is moved to. Saved with the next save().
  void mounted(const std::string& path) {
    auto id = mount_id_nofollow(path);
    if (!id) throw_errno("cannot read the mount id of {}", path);
    std::lock_guard lock(mutex_);
    for (auto& mount : journal_.mounts) {
      if (mount.path == path && mount.id == 0) {
        mount.id = *id;
        return;
      }
    }
  }
  void set_phase(const std::string& phase) {
    std::lock_guard lock(mutex_);
    journal_.phase = phase;
    save_journal(journal_);
  }
  void save() {
    std::lock_guard lock(mutex_);
    save_journal(journal_);
  }
  void step_done(const std::string& step) const { detail::crash_point(crash_after_, step); }

 private:
  std::mutex mutex_;
  std::mutex device_mapper_mutex_;
  Journal journal_;
  std::string crash_after_;
  const Policy& policy_;
};

// Directories are created without following symlinks, and journaled so teardown removes them.
void make_dirs(MountSession& session, const std::string& path, mode_t mode, const std::string& what) {
  make_dirs_nofollow(path, mode, what, [&](const std::string& created) { session.created_dir(created); });
}

// ---------------------------------------------------------------------------------------
// Lowers.

struct DiskCache {
  std::mutex mutex;
  std::map<std::string, std::string> disks;  // source -> device node
  std::set<std::string> without_kernel_partitions;  // disks whose table the kernel ignores
  // disk -> its partition table, read once for all the lowers on it (the disk is read-only).
  std::map<std::string, std::shared_ptr<const std::map<unsigned, PartitionInfo>>> tables;
  // (disk, partition number) -> its kernel node, or "" when the kernel shows no partitions.
  std::map<std::pair<std::string, unsigned>, std::string> partition_nodes;
};

PartitionInfo cached_partition(DiskCache& cache, const std::string& disk, unsigned number) {
  std::shared_ptr<const std::map<unsigned, PartitionInfo>> table;
  {
    std::lock_guard lock(cache.mutex);
    auto found = cache.tables.find(disk);
    if (found != cache.tables.end()) table = found->second;
  }
  if (!table) {
    // Read outside the lock; two workers may both read it the first time, which is harmless.
    table = std::make_shared<const std::map<unsigned, PartitionInfo>>(read_partition_table(disk));
    std::lock_guard lock(cache.mutex);
    cache.tables.emplace(disk, table);
  }
  auto found = table->find(number);
  if (found == table->end()) throw Error("disk {}: the partition table has no partition {}", disk, number);
  return found->second;
}

std::string resolve_disk(DiskCache& cache, const std::string& source, std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(cache.mutex);
    auto it = cache.disks.find(source);
    if (it != cache.disks.end()) return it->second;
  }
  std::string disk = find_disk(source, timeout);
  std::lock_guard lock(cache.mutex);
  cache.disks[source] = disk;
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
      disk = resolve_disk(cache, lower.storage->source, timeout);
    } catch (const std::exception& error) {
      throw Error("layer {} (storage '{}', partition {}): {}", lower.index, lower.storage->source,
                  *lower.partition, error.what());
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

struct LowerOutcome {
  std::vector<std::string> loops;
  std::vector<std::string> verity_devices;
  bool flat_device_mode = false;
};

// The dm-verity devices one lower activates. Until the lower is mounted they are removed again
// if anything fails (newest first, under the session's device-mapper lock); once it is mounted,
// keep() hands them to the journal, and teardown removes them after the unmount.
class LowerVerityDevices {
 public:
  LowerVerityDevices(MountSession& session, LowerOutcome& outcome)
      : session_(session), outcome_(outcome) {}
  LowerVerityDevices(const LowerVerityDevices&) = delete;
  LowerVerityDevices& operator=(const LowerVerityDevices&) = delete;
  ~LowerVerityDevices() { (void)remove_all(); }

  // Returns the path to mount or pass as device=.
  std::string activate(const std::string& name, const std::string& data_device,
                       const std::string& hash_device, const VerityParams& params) {
    session_.will_activate_verity(name);
    auto device_mapper = session_.lock_device_mapper();
    devices_.push_back(VerityDevice::activate(name, data_device, hash_device, params,
                                              session_.policy().verity_algorithms));
    outcome_.verity_devices.push_back(name);
    return devices_.back().path();
  }
  bool empty() const { return devices_.empty(); }
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
  LowerOutcome& outcome_;
  std::vector<VerityDevice> devices_;
};

LowerOutcome mount_lower(MountSession& session, DiskCache& cache, const LowerPlan& lower,
                         const std::string& target, std::chrono::milliseconds timeout,
                         bool try_flat_device_mode) {
  const Storage& storage = *lower.storage;
  std::string context = fmt::format("layer {} (storage '{}'{})", lower.index, storage.source,
                                    lower.partition ? fmt::format(", partition {}", *lower.partition) : "");
  try {
    std::string disk = resolve_disk(cache, storage.source, timeout);
    std::string device = disk;
    LowerOutcome outcome;
    LoopDevice partition_slice;
    if (lower.partition) {
      {
        // locate_partitions found it before the workers started.
        std::lock_guard lock(cache.mutex);
        auto found = cache.partition_nodes.find({disk, *lower.partition});
        if (found == cache.partition_nodes.end()) throw Error("partition was not located first");
        device = found->second;
      }
      PartitionInfo partition = cached_partition(cache, disk, *lower.partition);
      if (auto expected = option_value(storage.options, marker::kPartUuid)) {
        if (!same_uuid(partition.uuid, *expected)) {
          throw Error("PARTUUID mismatch on {} partition {}: expected {}, found {}", disk,
                      *lower.partition, *expected, partition.uuid.empty() ? "none" : partition.uuid);
        }
      }
      if (device.empty()) {
        // The kernel does not expose this disk's partitions: map the slice the table names.
        partition_slice = LoopDevice::attach(disk, partition.start, partition.size,
                                             loop_tag(session.container_id()));
        session.attached_loop(partition_slice, disk);
        device = partition_slice.path();
        outcome.loops.push_back(device);
      }
    }
    ErofsSuperblock superblock = read_erofs_superblock(device);
    if (auto expected = option_value(storage.options, marker::kErofsUuid)) {
      if (!same_uuid(superblock.uuid, *expected)) {
        throw Error("EROFS UUID mismatch on {}: expected {}, found {}", device, *expected, superblock.uuid);
      }
    }
    const unsigned long flags = lower.mount.flags;
    const std::string& data = lower.mount.data;
    LowerVerityDevices verity(session, outcome);
    std::string verity_name = fmt::format("{}{}", verity_name_prefix(session.container_id()), lower.index);
    if (superblock.devices.empty()) {
      if (!lower.device_verity.empty()) {
        throw Error("{} is a single-device EROFS image, but the storage has dm-verity options for "
                    "its device {}", device, lower.device_verity.begin()->first);
      }
      if (lower.verity) device = verity.activate(verity_name, device, device, *lower.verity);
      if (::mount(device.c_str(), target.c_str(), "erofs", flags, data.c_str()) != 0) {
        std::string error = mount_error("EROFS", device, target, data);
        throw Error("{}{}", error, verity.remove_all());
      }
      verity.keep();
      session.mounted(target);
      return outcome;
    }
    for (size_t slot = 1; slot <= superblock.devices.size(); ++slot) {
      check_device_verity(session.policy(), lower.device_verity.count(static_cast<unsigned>(slot)) != 0,
                          fmt::format("{} device {}", device, slot));
    }
    for (const auto& [slot, params] : lower.device_verity) {
      if (slot > superblock.devices.size()) {
        throw Error("the storage has dm-verity options for device {}, but {}'s device table has "
                    "{} devices", slot, device, superblock.devices.size());
      }
      if (params.no_superblock) {
        throw Error("device {}: {}no-superblock is not supported on a flat disk (its data area "
                    "is not the start of the disk; compose writes a verity superblock)",
                    slot, device_option_prefix(slot) + "dmverity.");
      }
    }
    if (lower.verity && lower.verity->no_superblock) {
      throw Error("{}: X-kata.dmverity.no-superblock is not supported for a multi-device (fsmeta) "
                  "image on a flat disk; compose writes a verity superblock", device);
    }
    // Multi-device (fsmeta) image on one flat disk. Kernels 6.4+ read the extra devices from
    // the primary device at mapped_blkaddr when no device= is given; older ones refuse such a
    // mount (EINVAL), and then get read-only loop slices plus device= options. With dm-verity
    // every device must be read through its verity device, so only the device= form will do.
    bool any_verity = lower.verity || !lower.device_verity.empty();
    std::string flat_error = any_verity ? "not tried: dm-verity needs device= options" : "not tried";
    if (try_flat_device_mode && !any_verity) {
      if (::mount(device.c_str(), target.c_str(), "erofs", flags, data.c_str()) == 0) {
        outcome.flat_device_mode = true;
        session.mounted(target);
        return outcome;
      }
      flat_error = std::strerror(errno);
    }
    uint64_t disk_bytes = block_device_bytes(device);
    std::vector<LoopDevice> slices;
    auto attach_slice = [&](uint64_t offset, uint64_t size) -> std::string {
      slices.push_back(LoopDevice::attach(device, offset, size, loop_tag(session.container_id())));
      session.attached_loop(slices.back(), device);
      outcome.loops.push_back(slices.back().path());
      return slices.back().path();
    };
    // A verity device over a flat disk: the data through a slice of its own, and the hash area
    // through a slice from its disk offset to the end of the disk, so no two dm devices share a
    // device (libcryptsetup opens the data device exclusively).
    auto activate_on_disk = [&](const std::string& name, uint64_t data_offset, uint64_t data_size,
                                const VerityParams& params) {
      std::string data_slice = attach_slice(data_offset, data_size);
      std::string hash_slice = attach_slice(params.hash_offset, 0);
      VerityParams on_slice = params;
      on_slice.hash_offset = 0;
      return verity.activate(name, data_slice, hash_slice, on_slice);
    };
    std::string source = device;
    if (lower.verity) {
      try {
        source = activate_on_disk(verity_name, 0, superblock.bytes(superblock.blocks, "the fsmeta's size"),
                                  *lower.verity);
      } catch (const std::exception& error) {
        throw Error("the fsmeta (primary device, {} blocks): {}", superblock.blocks, error.what());
      }
    }
    std::string slice_data = data;
    for (size_t i = 0; i < superblock.devices.size(); ++i) {
      const auto& slot = superblock.devices[i];
      if (slot.mapped_blkaddr == 0 || slot.blocks == 0) {
        throw Error("{} is a multi-device EROFS image but device {} has no mapped_blkaddr/blocks "
                    "in its device table, so it cannot be read from one flat disk (flat-device "
                    "mount failed: {})", device, i + 1, flat_error);
      }
      std::string slot_name = fmt::format("{} device {}", device, i + 1);
      uint64_t offset = superblock.bytes(slot.mapped_blkaddr, slot_name + " offset");
      uint64_t size = superblock.bytes(slot.blocks, slot_name + " size");
      uint64_t end = add_or_throw(offset, size, slot_name + " end");
      if (disk_bytes != 0 && end > disk_bytes) {
        throw Error("{}: bytes {}..{} lie beyond the end of the disk ({} bytes)", slot_name, offset,
                    end, disk_bytes);
      }
      std::string path;
      auto params = lower.device_verity.find(static_cast<unsigned>(i + 1));
      if (params != lower.device_verity.end()) {
        try {
          path = activate_on_disk(fmt::format("{}-device-{}", verity_name, i + 1), offset, size,
                                  params->second);
        } catch (const std::exception& error) {
          throw Error("device {} ({} blocks at block {}): {}", i + 1, slot.blocks,
                      slot.mapped_blkaddr, error.what());
        }
      } else {
        path = attach_slice(offset, size);
      }
      slice_data += (slice_data.empty() ? "" : ",") + ("device=" + path);
    }
    if (::mount(source.c_str(), target.c_str(), "erofs", flags, slice_data.c_str()) != 0) {
      std::string error = mount_error("EROFS", source, target, slice_data);
      throw Error("{} (flat-device mount failed first: {}){}", error, flat_error,
                  verity.remove_all());
    }
    verity.keep();
    session.mounted(target);
    // The mount holds the slices now; autoclear releases them when it is unmounted.
    return outcome;
  } catch (const std::exception& error) {
    throw Error("{}: {}", context, error.what());
  }
}

}  // namespace

namespace {

// What the rootfs mount's filesystem type will be in mountinfo.
std::string rootfs_fstype(const Plan& plan) {
  switch (plan.kind) {
    case RootfsKind::Overlay:
    case RootfsKind::ReadOnlyOverlay: return "overlay";
    case RootfsKind::VirtioFs: return "virtiofs";
    case RootfsKind::Bind: return plan.bind.mount_index == 0 ? "ext4" : "erofs";
  }
  return {};
}

// Refuses `dir` when it is, or holds, a mount point (or cannot be reached without symlinks).
void refuse_existing_mounts(const std::string& dir, const std::string& what) {
  if (!open_nofollow(dir)) {
    if (errno == ENOENT) return;
    throw_errno("{} {} cannot be reached without following a symlink", what, dir);
  }
  auto mounts = mounts_under(dir);
  if (!mounts.empty()) {
    throw Error("{} {} already holds {} mount(s) (first: {} {}); refusing to mount there", what,
                dir, mounts.size(), mounts.front().fstype, mounts.front().mount_point);
  }
}

}  // namespace

MountResult mount_rootfs(const MountRequest& request) {
  contract::validate_container_id(request.container_id);
  if (request.rootfs.empty()) throw Error("no rootfs mount point given");
  Plan plan = make_plan(request.storages);
  check_plan_policy(plan, request.policy);
  // dm names are at most 127 bytes: refuse an id that cannot name its verity devices now,
  // before anything is mounted, rather than halfway through the lowers.
  for (const auto& lower : plan.lowers) {
    if (!lower.verity && lower.device_verity.empty()) continue;
    std::string longest = fmt::format("{}{}", verity_name_prefix(request.container_id), lower.index);
    if (!lower.device_verity.empty()) {
      longest += fmt::format("-device-{}", lower.device_verity.rbegin()->first);
    }
    if (longest.size() > 127) {
      throw Error("container id '{}' is too long for its dm-verity device names ('{}' is {} "
                  "bytes, device-mapper allows 127)", request.container_id, longest, longest.size());
    }
  }
  // Paths are taken as given (made absolute, never resolved through a symlink): a symlink in
  // them is refused when the directories are created.
  std::string base = normal_absolute(request.base_dir);
  std::string rootfs = normal_absolute(request.rootfs);
  std::string container_dir = base + "/" + request.container_id;
  std::string layer_dir = container_dir + "/multi-layer";
  std::string upper_dir = layer_dir + "/upper";
  // A writable overlay always has an upper (tmpfs when no storage names one); the other shapes
  // only when an upper storage is given.
  bool has_upper = plan.upper != nullptr || plan.kind == RootfsKind::Overlay;
  if (auto why = rootfs_refusal(rootfs, base, request.container_id); !why.empty()) {
    throw Error("rootfs {} refused: {}", rootfs, why);
  }

  // The base is shared by containers: created, never removed.
  make_dirs_nofollow(base, 0755, "base directory", nullptr);
  if (load_journal(base, request.container_id)) {
    throw Error("container {} is already mounted or was not torn down (journal {} exists); run "
                "teardown first", request.container_id, journal_path(base, request.container_id));
  }
  // The upper disk is found (and its size checked against the policy) before anything is made.
  std::string upper_device;
  if (plan.upper != nullptr) {
    upper_device = find_disk(plan.upper->source, request.device_timeout);
    uint64_t bytes = block_device_bytes(upper_device);
    std::string context = fmt::format("upper storage '{}' ({})", plan.upper->source, upper_device);
    if (bytes == 0 && request.policy.max_upper_bytes) {
      throw Error("{}: cannot tell its size, and {} limits it", context, request.policy.origin);
    }
    check_upper_size(request.policy, bytes, context);
  }
  // Nothing may be mounted where this call mounts: a rollback or teardown must never take
  // away mounts it did not make.
  refuse_existing_mounts(rootfs, "rootfs");
  refuse_existing_mounts(container_dir, "container directory");
  Journal journal;
  journal.container_id = request.container_id;
  journal.base_dir = base;
  journal.rootfs = rootfs;
  journal.phase = "mounting";
  MountSession session(journal, request.crash_after, request.policy);
  MountResult result;
  result.rootfs = rootfs;
  result.rootfs_kind = kind_name(plan.kind);
  result.read_only = plan.read_only || plan.kind == RootfsKind::ReadOnlyOverlay;
  if (has_upper) result.upper = upper_dir;
  auto step_started = Clock::now();
  auto step_finished = [&](const char* step) {
    auto now = Clock::now();
    result.step_ms.emplace_back(step, std::chrono::duration<double, std::milli>(now - step_started).count());
    step_started = now;
  };
  try {
    session.save();  // first, so even a crash inside mkdir leaves a journal behind
    make_dirs(session, container_dir, 0700, "container directory");
    if (plan.kind != RootfsKind::VirtioFs) make_dirs(session, layer_dir, 0755, "layer directory");
    if (has_upper) make_dirs(session, upper_dir, 0755, "upper directory");
    for (const auto& lower : plan.lowers) {
      result.lowers.push_back(fmt::format("{}/lower-{}", layer_dir, lower.index));
      make_dirs(session, result.lowers.back(), 0755, "lower directory");
    }
    make_dirs(session, rootfs, 0755, "rootfs");
    // Every mount is journaled before any is made, in one write (teardown skips those that
    // never happened), so a crash at any point leaves nothing the journal does not name. Each
    // mount's id is recorded once it is made.
    std::vector<JournalMount> mount_points;
    for (const auto& lower : result.lowers) mount_points.push_back({lower, 0, "erofs"});
    if (has_upper) mount_points.push_back({upper_dir, 0, plan.upper != nullptr ? "ext4" : "tmpfs"});
    mount_points.push_back({rootfs, 0, rootfs_fstype(plan)});
    session.will_mount_all(mount_points);
    step_finished("dirs");
    session.step_done("mount:dirs");

    // Lowers, concurrently.
    if (!plan.lowers.empty()) {
      DiskCache disks;
      locate_partitions(disks, plan.lowers, request.device_timeout);
      std::atomic<size_t> next{0};
      std::mutex outcome_mutex;
      std::vector<std::string> errors;
      auto worker = [&] {
        while (true) {
          size_t i = next.fetch_add(1);
          if (i >= plan.lowers.size()) return;
          try {
            LowerOutcome outcome = mount_lower(session, disks, plan.lowers[i], result.lowers[i],
                                               request.device_timeout, request.try_flat_device_mode);
            std::lock_guard lock(outcome_mutex);
            result.loop_devices.insert(result.loop_devices.end(), outcome.loops.begin(), outcome.loops.end());
            result.flat_device_mode = result.flat_device_mode || outcome.flat_device_mode;
            result.verity_devices.insert(result.verity_devices.end(), outcome.verity_devices.begin(),
                                         outcome.verity_devices.end());
          } catch (const std::exception& error) {
            std::lock_guard lock(outcome_mutex);
            errors.push_back(error.what());
            next = plan.lowers.size();  // stop handing out work
          }
        }
      };
      std::vector<std::thread> threads;
      size_t parallel = std::clamp<size_t>(request.parallel_mounts, 1, plan.lowers.size());
      for (size_t t = 0; t < parallel; ++t) threads.emplace_back(worker);
      for (auto& thread : threads) thread.join();
      if (!errors.empty()) throw Error("{}", errors.front());
      session.save();  // the loop devices, for status and teardown
    }
    step_finished("lowers");
    session.step_done("mount:lowers");

    // Upper: the ext4 storage, or a tmpfs (memory-backed upper) for a writable overlay.
    if (plan.upper != nullptr) {
      const Storage& upper = *plan.upper;
      const std::string& device = upper_device;
      const MountOptions& options = plan.upper_mount;
      if (::mount(device.c_str(), upper_dir.c_str(), "ext4", options.flags, options.data.c_str()) != 0) {
        throw Error("upper (storage '{}'): {}", upper.source,
                    mount_error("ext4", device, upper_dir, options.data));
      }
    } else if (has_upper &&
               ::mount("tmpfs", upper_dir.c_str(), "tmpfs", MS_NODEV | MS_NOSUID, "mode=0755") != 0) {
      throw_errno("cannot mount a tmpfs upper at {}", upper_dir);
    }
    if (has_upper) {
      session.mounted(upper_dir);
      session.save();
    }
    step_finished("upper");
    session.step_done("mount:upper");

    // mkdir directives, then the overlay's own upper/work directories.
    for (const auto& [spec, directive] : plan.mkdirs) {
      std::string root = directive.mount_index == 0 ? upper_dir : result.lowers[directive.mount_index - 1];
      apply_mkdir_directive(root, directive, spec);
    }
    if (plan.kind == RootfsKind::Overlay) {
      for (const char* name : {"upper", "work"}) {
        apply_mkdir_directive(upper_dir, MkdirDirective{0, name, 0755, {}, {}},
                              fmt::format("{{{{ mount 0 }}}}/{}:0755", name));
      }
    }
    step_finished("mkdir");
    session.step_done("mount:mkdir");

    switch (plan.kind) {
      case RootfsKind::Overlay:
      case RootfsKind::ReadOnlyOverlay:
        result.overlay_method = mount_overlay(layer_dir, rootfs, plan.lowers.size(), plan.overlay_options,
                                              plan.kind == RootfsKind::Overlay, request.try_lowerdir_plus);
        break;
      case RootfsKind::Bind: {
        std::string root = plan.bind.mount_index == 0 ? upper_dir : result.lowers[plan.bind.mount_index - 1];
        UniqueFd source = open_bind_source(root, plan.bind, plan.bind_spec);
        result.bind_source = plan.bind.path.empty() ? root : root + "/" + plan.bind.path;
        bind_rootfs(source.get(), rootfs, plan.read_only,
                    fmt::format("{} ({})", result.bind_source, plan.bind_spec));
        break;
      }
      case RootfsKind::VirtioFs:
        mount_virtiofs(*plan.share, plan.share_mount, rootfs, plan.read_only);
        result.virtiofs_tag = plan.share->source;
        break;
    }
    session.mounted(rootfs);
    step_finished("rootfs");
    session.set_phase("mounted");
    session.step_done(plan.kind == RootfsKind::Overlay ? "mount:overlay" : "mount:rootfs");
    return result;
  } catch (const std::exception& error) {
    try {
      session.save();  // the mount ids recorded so far: the rollback finds each by its id
    } catch (const std::exception&) {
      // The journal on disk still names every mount point; the rollback falls back to those.
    }
    TeardownRequest undo;
    undo.container_id = request.container_id;
    undo.rootfs = rootfs;
    undo.base_dir = base;
    TeardownReport report = detail::run_teardown(undo, true);
    std::string rollback = report.clean() ? "rolled back" : "rollback incomplete: ";
    for (size_t i = 0; i < report.problems.size(); ++i) rollback += (i ? "; " : "") + report.problems[i];
    throw Error("mounting container {} failed: {} ({})", request.container_id, error.what(), rollback);
  }
}

}  // namespace evmdk::guest
