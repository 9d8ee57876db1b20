#pragma once
// Private to the driver: the upper step (docs/guest.md "Mount", step 4): the ext4 storage, or
// a tmpfs (a memory-backed upper teardown releases by unmounting) for a writable overlay
// without one.
#include <string>

#include "evmdk/guest/driver.h"
#include "evmdk/guest/plan.h"

namespace evmdk::guest::detail {

// A writable overlay always has an upper (tmpfs when no storage names one); the other shapes
// only when an upper storage is given.
bool has_upper(const Plan& plan);

// The upper storage's disk, found (and its size checked against the policy) before anything is
// made; "" when the plan has no upper storage.
std::string find_upper_disk(const Plan& plan, const MountRequest& request);

// Mounts the upper at `upper_dir`: the ext4 storage from `device`, or a tmpfs; nothing when the
// plan has no upper.
void mount_upper(const Plan& plan, const std::string& device, const std::string& upper_dir);

}  // namespace evmdk::guest::detail
