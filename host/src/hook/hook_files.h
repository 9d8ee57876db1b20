#pragma once
// Internal to the hook: reading back the files a run wrote in its own directory (a retry and
// `hook cleanup` do), which others may have replaced meanwhile.
#include <cstddef>
#include <string>

#include "evmdk/host/hook/hook.h"

namespace evmdk::host::hook_detail {

// Never through a symlink, never a FIFO or device, never more than kMaxHookStateBytes.
HookState load_hook_state(const std::string& path);

}  // namespace evmdk::host::hook_detail
