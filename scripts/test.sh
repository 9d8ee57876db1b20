#!/usr/bin/env bash
# Runs the whole test suite: installs dependencies, builds with warnings as errors, runs every
# test (unit, root: loop devices/mounts/cgroups, qemu: a real guest under TCG), then the unit
# tests again under ASan+UBSan, then the fuzzers for a bounded time when clang is present, then
# the package checks (scripts/check-package.sh: install layout, man pages, completion, the
# Debian packages installed with dpkg -i, the demo and the C API test against them).
# With CI=true, tests whose prerequisites are missing fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
jobs=$(nproc)

echo "== build (warnings as errors)"
cmake -S . -B build -G Ninja -DEVMDK_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

echo "== build (ASan+UBSan, unit tests only)"
cmake -S . -B build-asan -G Ninja -DEVMDK_WERROR=ON -DEVMDK_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs" --target evmdk_unit_tests

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzz (bounded)"
  ./scripts/fuzz.sh
fi

echo "== unit tests under ASan+UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$jobs" -L unit)

echo "== all tests (unit, root, qemu)"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== compatibility lanes (core QEMU scenarios on QEMU 7.2/10 x guest kernel 6.1/6.12)"
./scripts/test-lanes.sh build

echo "== package checks"
./scripts/check-package.sh build
