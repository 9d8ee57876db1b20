#pragma once
// Private to the driver: the lower step (docs/guest.md "Mount", step 3). Each lower is
// located (its disk and partition), its identity verified (PARTUUID, EROFS UUID), its
// dm-verity devices and loop slices set up, and then mounted read-only at lower-<i>.
#include <map>
#include <string>
#include <vector>

#include "evmdk/guest/driver.h"
#include "evmdk/guest/plan.h"
#include "mount_session.h"

namespace evmdk::guest::detail {

// What the lowers left for the mount result (and, through the session, the journal).
struct LowersOutcome {
  std::vector<std::string> loops;           // loop devices attached
  std::vector<std::string> verity_devices;  // dm-verity names activated
  bool flat_device_mode = false;            // a multi-device lower mounted without slices
  std::map<std::string, std::string> dax;   // DAX lower's mount point -> "always" | "fallback"
  std::vector<std::string> warnings;        // e.g. a DAX fallback the storage allows
};

// Refuses, before anything is mounted, a container id too long to name some lower's dm-verity
// devices (device-mapper allows 127 bytes), rather than halfway through the lowers.
void check_verity_names_fit(const std::vector<LowerPlan>& lowers, const std::string& container_id);

// Mounts lowers[i] at paths[i], request.parallel_mounts at a time, after every partition has
// been located one by one. The first failure stops handing out work and is rethrown (naming
// the layer) once the workers are done; what was mounted is in the journal for the rollback.
LowersOutcome mount_lowers(MountSession& session, const std::vector<LowerPlan>& lowers,
                           const std::vector<std::string>& paths, const MountRequest& request);

}  // namespace evmdk::guest::detail
