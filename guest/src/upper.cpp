#include "upper.h"

#include <sys/mount.h>

#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/policy.h"
#include "rootfs.h"

namespace evmdk::guest::detail {

bool has_upper(const Plan& plan) {
  return plan.upper != nullptr || plan.kind == RootfsKind::Overlay;
}

std::string find_upper_disk(const Plan& plan, const MountRequest& request) {
  if (plan.upper == nullptr) return {};
  std::string device = find_disk(plan.upper->source, request.device_timeout);
  uint64_t bytes = block_device_size(device);
  std::string context = fmt::format("upper storage '{}' ({})", plan.upper->source, device);
  if (bytes == 0 && request.policy.max_upper_bytes) {
    throw Error("{}: cannot tell its size, and {} limits it", context, request.policy.origin);
  }
  check_upper_size(request.policy, bytes, context);
  return device;
}

void mount_upper(const Plan& plan, const std::string& device, const std::string& upper_dir) {
  if (plan.upper != nullptr) {
    const MountOptions& options = plan.upper_mount;
    const char* data = options.data.c_str();
    if (::mount(device.c_str(), upper_dir.c_str(), "ext4", options.flags, data) != 0) {
      throw Error("upper (storage '{}'): {}", plan.upper->source,
                  mount_error("ext4", device, upper_dir, options.data));
    }
  } else if (has_upper(plan) &&
             ::mount("tmpfs", upper_dir.c_str(), "tmpfs", MS_NODEV | MS_NOSUID, "mode=0755") != 0) {
    throw_errno("cannot mount a tmpfs upper at {}", upper_dir);
  }
}

}  // namespace evmdk::guest::detail
