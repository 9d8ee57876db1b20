#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for a bounded time
# (EVMDK_FUZZ_SECONDS, default 30) from the checked-in seed corpus. Exits non-zero when a
# fuzzer finds a crash (the reproducer is left in build-fuzz/crashes/). Skips without clang.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang++ >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then
  echo "fuzz: clang not installed, skipping"
  exit 0
fi
seconds=${EVMDK_FUZZ_SECONDS:-30}

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DEVMDK_FUZZ=ON -DEVMDK_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target vmdk_descriptor_fuzzer -j"$(nproc)"

# The working corpus persists in build-fuzz/ so coverage grows from run to run; the
# checked-in seeds (and regression inputs) are always part of it.
mkdir -p build-fuzz/crashes build-fuzz/corpus
work=build-fuzz/corpus
cp tests/fuzz/corpus/* "$work/"

echo "fuzz: vmdk_descriptor_fuzzer for ${seconds}s"
# -max_len covers QEMU's 10,240-byte CID window; the 1 MiB cut is covered by unit tests.
if ! build-fuzz/tests/fuzz/vmdk_descriptor_fuzzer "$work" \
    -max_total_time="$seconds" -max_len=12288 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/crashes/ -print_final_stats=1 >build-fuzz/fuzz.log 2>&1; then
  tail -n 60 build-fuzz/fuzz.log
  echo "fuzz: vmdk_descriptor_fuzzer FAILED; reproducer(s) in build-fuzz/crashes/" >&2
  exit 1
fi
grep -E '^stat::number_of_executed_units|^stat::new_units_added' build-fuzz/fuzz.log || true
echo "fuzz: no crash"
