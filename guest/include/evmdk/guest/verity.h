#pragma once
// dm-verity in the guest: turn a Storage's X-kata.dmverity.* options into verity parameters,
// and activate a read-only verity device over a lower's block device (libcryptsetup), removed
// again when its owner goes away. See docs/verity.md for the mount flow that uses it.
//
// Mount flow contract (guest driver):
//   auto params = verity_params_from_options(storage.options, "lower-0 (/dev/vda1)");
//   std::optional<VerityDevice> verity;
//   if (params) verity = VerityDevice::activate(name, dev, dev, *params);  // same device
//   mount(verity ? verity->path() : dev, ..., "erofs", MS_RDONLY);
//   ... teardown: umount first, then verity->remove() (or let it go out of scope).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/contract/verity_options.h"

namespace evmdk::guest {

// Parameters of one dm-verity mapping, as the host sends them (contract/verity_options.h).
using VerityParams = contract::VerityOptions;

// The contract's decoder (contract::decode_verity_options): X-kata.dmverity-enabled /
// X-kata.dmverity.* of a Storage's options. nullopt when verity is not enabled; throws
// evmdk::Error naming `context` and the offending option otherwise.
inline std::optional<VerityParams> verity_params_from_options(
    const std::vector<std::string>& options, std::string_view context) {
  return contract::decode_verity_options(options, context);
}

// The contract's encoder (contract::encode_verity_options): the options that carry `params`.
inline std::vector<std::string> verity_options(const VerityParams& params) {
  return contract::encode_verity_options(params);
}

// Whether this kernel has device-mapper (dm-mod loaded or built in); dm-verity itself is
// loaded on demand by the kernel or must be insmod-ed by the guest init.
bool device_mapper_available();

// Refuses (throws) a hash algorithm; `where` names the verity device for the error.
using VerityAlgorithmCheck =
    std::function<void(const std::string& algorithm, const std::string& where)>;

// A read-only dm-verity device /dev/mapper/<name>. Move-only; the destructor removes the
// device (best effort: a device still in use, e.g. mounted, stays and the error is dropped —
// call remove() to see it).
class VerityDevice {
 public:
  VerityDevice() = default;  // owns nothing
  VerityDevice(VerityDevice&& other) noexcept;
  VerityDevice& operator=(VerityDevice&& other) noexcept;
  VerityDevice(const VerityDevice&) = delete;
  VerityDevice& operator=(const VerityDevice&) = delete;
  ~VerityDevice();

  // Activates dm-verity `name` over data_device, with the tree on hash_device (may be the same
  // path). Before returning it reads the first data block through the new device, so a wrong
  // root hash (or a tree that does not match the data's first block) refuses activation here
  // instead of at mount time; nothing is left behind on failure. Throws evmdk::Error naming
  // `name` and the devices: bad name, name already in use, no superblock / superblock that
  // disagrees with the options, wrong root hash, no device-mapper in the kernel.
  // `check_algorithm` (none: any algorithm) is called with the hash algorithm the tree really
  // uses (from its superblock, or the options without one) before activation, and throws to
  // refuse it (the driver passes the policy's check_verity_algorithm).
  static VerityDevice activate(const std::string& name, const std::string& data_device,
                               const std::string& hash_device, const VerityParams& params,
                               const VerityAlgorithmCheck& check_algorithm = {});

  bool active() const { return !name_.empty(); }
  const std::string& name() const { return name_; }
  // /dev/mapper/<name>; what to mount.
  std::string path() const;

  // Reads the whole device through dm-verity, so every data block is checked against the tree
  // now rather than on first access. Throws evmdk::Error naming the device and the byte offset
  // of the first block that fails (EIO). Returns the number of bytes checked.
  uint64_t verify_all() const;

  // Removes the device now. Throws (the device stays owned) when it cannot, e.g. still mounted.
  void remove();
  // Stops owning the device without removing it (e.g. teardown happens in another process,
  // which calls remove_verity_device(name)). Returns the name.
  std::string release();

 private:
  explicit VerityDevice(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// Whether a device-mapper device with this name exists (any target type).
bool verity_device_exists(const std::string& name);
// Whether the kernel has seen a data block fail verification on this dm-verity device (its
// status turns from verified to corrupted at the first bad read, and stays so). nullopt when
// there is no such device. For telling which layer an EIO came from.
std::optional<bool> verity_device_corrupted(const std::string& name);
// Removes a dm-verity device by name; returns false when there was none. Throws when it exists
// but cannot be removed (busy). For teardown after a crash, when no VerityDevice owns it.
bool remove_verity_device(const std::string& name);
// Names of existing device-mapper devices (from /sys/block/dm-*/dm/name), to check that
// teardown left none behind.
std::vector<std::string> device_mapper_names();

}  // namespace evmdk::guest
