#pragma once
// Private to the driver: the one crash-injection hook mount and teardown share (docs/guest.md
// "Crash injection"). Tests name a step (MountRequest::crash_after, TeardownRequest::crash_after,
// EVMDK_GUEST_CRASH_AFTER in the CLI) and the process SIGKILLs itself right after it, so they
// can check that the journal lets a later teardown finish the job.
#include <string>
#include <string_view>

namespace evmdk::guest::detail {

class CrashInjection {
 public:
  // `after_step` empty: no step crashes (normal use).
  explicit CrashInjection(std::string after_step) : after_step_(std::move(after_step)) {}

  // Called once a step is done; SIGKILLs the process when it is the step named.
  void step_done(std::string_view step) const;

 private:
  std::string after_step_;
};

}  // namespace evmdk::guest::detail
