#pragma once
// A failed invariant in a fuzz target: print what broke and abort, so libFuzzer keeps the input.
#include <cstdio>
#include <cstdlib>

namespace evmdk::fuzz {

inline void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace evmdk::fuzz
