// libFuzzer target for the hook's state file (<state-dir>/<id>/hook-state.json), which a retry
// and `hook cleanup` read back from a directory others may write to. Whatever parses must
// survive the writer: to_json then parse gives the same state.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/host/hook/hook.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using evmdk::fuzz::check;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  evmdk::host::HookState state;
  try {
    state = evmdk::host::parse_hook_state(text, "fuzz/hook-state.json");
  } catch (const evmdk::Error&) {
    return 0;
  }
  check(state.status == "building" || state.status == "complete", "a known status");
  auto again = evmdk::host::parse_hook_state(evmdk::host::to_json(state).dump(), "again");
  if (state.status == "building") {
    // A building state is written without files (cleanup ignores them there).
    state.files.clear();
  }
  check(again == state, "the state round-trips through its writer");
  return 0;
}
