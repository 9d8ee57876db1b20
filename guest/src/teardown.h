#pragma once
// Private to the driver: the teardown that both `guest teardown` and a failed mount's rollback
// run.
#include <string>

#include "evmdk/guest/driver.h"

namespace evmdk::guest::detail {

// `rollback`: undo a mount that just failed. Only what that call journaled is touched (no sweep
// of the container directory for mounts it did not record).
TeardownReport run_teardown(const TeardownRequest& request, bool rollback);

}  // namespace evmdk::guest::detail
