#include "crash_injection.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>

namespace evmdk::guest::detail {

void CrashInjection::step_done(std::string_view step) const {
  if (after_step_.empty() || after_step_ != step) return;
  fmt::print(stderr, "erofs-vmdk: crash injected after step '{}'\n", step);
  ::kill(::getpid(), SIGKILL);
}

}  // namespace evmdk::guest::detail
