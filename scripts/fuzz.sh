#!/usr/bin/env bash
# Builds every libFuzzer target (tests/fuzz/*_fuzzer.cpp) with clang in build-fuzz/ and runs
# each for a bounded time from its checked-in seeds (tests/fuzz/corpus/<name>/).
#   EVMDK_FUZZ_SECONDS   seconds per target (default 10: the 14 targets take under 3 minutes)
#   EVMDK_FUZZ_TARGETS   space-separated names to run (default: all)
# Exits non-zero when a fuzzer finds a crash, a leak, a timeout or an allocation over its RSS
# limit; the reproducer is left in build-fuzz/crashes/<name>/. Skips without clang.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang++ >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then
  echo "fuzz: clang not installed, skipping"
  exit 0
fi
seconds=${EVMDK_FUZZ_SECONDS:-10}

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DEVMDK_FUZZ=ON -DEVMDK_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target evmdk_fuzzers -j"$(nproc)"

targets=${EVMDK_FUZZ_TARGETS:-}
if [ -z "$targets" ]; then
  targets=$(cd tests/fuzz && ls *_fuzzer.cpp | sed 's/\.cpp$//')
fi

# ASan's default 256 MiB quarantine of freed memory alone would break the 64 MiB RSS limit of
# the template and mount-list targets; a small one still catches use-after-free nearby.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=1:thread_local_quarantine_size_kb=64:malloc_context_size=4:allocator_release_to_os_interval_ms=200}

failed=0
for name in $targets; do
  # The working corpus persists in build-fuzz/ so coverage grows from run to run; the
  # checked-in seeds (and regression inputs) are always part of it.
  work=build-fuzz/corpus/$name
  crashes=build-fuzz/crashes/$name
  mkdir -p "$work" "$crashes"
  if [ -d "tests/fuzz/corpus/$name" ]; then cp -r "tests/fuzz/corpus/$name/." "$work/"; fi
  extra=()
  if [ -f "tests/fuzz/$name.options" ]; then read -r -a extra <"tests/fuzz/$name.options"; fi
  log=build-fuzz/$name.log
  echo "fuzz: $name for ${seconds}s ${extra[*]}"
  # Defaults first: a target's .options may override them (libFuzzer takes the last value).
  if ! "build-fuzz/tests/fuzz/$name" "$work" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 "${extra[@]}" -artifact_prefix="$crashes/" \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $name FAILED; reproducer(s) in $crashes/" >&2
    failed=1
    continue
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" || true
done
if [ "$failed" -ne 0 ]; then exit 1; fi
echo "fuzz: no crash"
