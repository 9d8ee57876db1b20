#pragma once
// Private to the driver: the teardown that both `guest teardown` and a failed mount's rollback
// run, and the crash-injection hook both use.
#include <string>

#include "evmdk/guest/driver.h"

namespace evmdk::guest::detail {

// `rollback`: undo a mount that just failed. Only what that call journaled is touched (no sweep
// of the container directory for mounts it did not record).
TeardownReport run_teardown(const TeardownRequest& request, bool rollback);

// Test hook (docs/guest.md "Crash injection"): SIGKILLs the process after the named step.
void crash_point(const std::string& crash_after, const std::string& step);

}  // namespace evmdk::guest::detail
