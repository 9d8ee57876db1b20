#!/usr/bin/env bash
# Compatibility lanes: the core QEMU scenarios on every combination of QEMU {7.2 (the
# system's), 10 (bookworm-backports)} and guest kernel {6.1 (the system's), 6.12
# (bookworm-backports)}, one ctest run per lane with the harness pointed at that lane's QEMU
# and kernel (EVMDK_QEMU_BINARY, EVMDK_QEMU_DATADIRS, EVMDK_QEMU_KERNEL,
# EVMDK_QEMU_MODULES_DIR; see docs/testing.md). scripts/install-lanes.sh unpacks the newer
# ones first. With CI=true a lane that cannot be set up fails the run; otherwise it is skipped
# with a message. Every lane runs even when an earlier one failed; the summary at the end
# names each lane's result and time.
# Usage: scripts/test-lanes.sh [BUILD_DIR]   EVMDK_LANES="qemu10-kernel6.12 ..." picks lanes,
# EVMDK_LANE_JOBS=N runs N guests at once (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

# The core scenarios: smoke, three-layer GPT, flat (fsmeta + device blobs, and erofs-utils
# 1.8.10's own rebuild-mode fsmeta), tar-index layers (containerd 2.2.4's real lists through the
# hook: loop slice + device= on 6.1, flat-device mode on 6.12), dm-verity on a flat disk,
# hook -> guest, hot-plug over QMP.
core='^qemu\.(HarnessSmoke|GptThreeLayers|FlatDisk|TarIndexQemu|HookQemu|HotplugQemu)\.|^qemu\.FlatVerity\.EveryDevice'
# Per guest kernel, what only that kernel shows. 6.12: PmemFlat, a flat pmem disk mounted in
# flat-device mode with DAX (issue 18 (b); 6.1's side of it, the refusal and the warning, and
# PmemDriver, the GPT pmem disk with DAX, run with every QEMU test on the system lane, 7.2/6.1).
# Both pass on all four lanes; times in docs/testing.md.
extra_kernel612='^qemu\.PmemFlat\.'
lanes=(${EVMDK_LANES:-qemu7.2-kernel6.1 qemu10-kernel6.1 qemu7.2-kernel6.12 qemu10-kernel6.12})

if ! ./scripts/install-lanes.sh "$build_dir"; then
  if [ "${CI:-}" = true ]; then
    echo "lanes: FAILED: cannot unpack QEMU 10 / kernel 6.12 (scripts/install-lanes.sh)" >&2
    exit 1
  fi
  echo "lanes: SKIPPED: scripts/install-lanes.sh failed (with CI=true this is an error)"
  exit 0
fi
# shellcheck source=/dev/null
. "$build_dir/lanes/lanes.env"

summary=()
failed=0
for lane in "${lanes[@]}"; do
  vars=()
  case "$lane" in
    qemu7.2-*) ;;
    qemu10-*) vars+=(EVMDK_QEMU_BINARY="$LANE_QEMU10_BINARY" EVMDK_QEMU_DATADIRS="$LANE_QEMU10_DATADIRS"
                     QEMU_MODULE_DIR="$LANE_QEMU10_MODULE_DIR") ;;
    *) echo "lanes: unknown lane $lane" >&2; exit 1 ;;
  esac
  regex=$core
  case "$lane" in
    *-kernel6.1) ;;
    *-kernel6.12) vars+=(EVMDK_QEMU_KERNEL="$LANE_KERNEL612" EVMDK_QEMU_MODULES_DIR="$LANE_KERNEL612_MODULES")
                  regex="$core|$extra_kernel612" ;;
    *) echo "lanes: unknown lane $lane" >&2; exit 1 ;;
  esac
  echo "== lane $lane: core QEMU scenarios (${vars[*]:-system QEMU and kernel})"
  started=$(date +%s)
  status=0
  (cd "$build_dir" &&
    env -u EVMDK_QEMU_BINARY -u EVMDK_QEMU_DATADIRS -u EVMDK_QEMU_KERNEL -u EVMDK_QEMU_MODULES_DIR \
      -u QEMU_MODULE_DIR "${vars[@]}" \
      ctest --output-on-failure --no-tests=error -j"${EVMDK_LANE_JOBS:-$(nproc)}" -L qemu -R "$regex" 2>&1 | sed "s/^/[$lane] /"
    exit "${PIPESTATUS[0]}") || status=$?
  seconds=$(( $(date +%s) - started ))
  # Which mount paths the guest kernel took (the scenarios print "[mount path] ..." lines;
  # ctest keeps every test's output, passing or not, in LastTest.log).
  paths=$(grep -h '^\[mount path\]' "$build_dir/Testing/Temporary/LastTest.log" 2>/dev/null | sort -u || true)
  if [ -n "$paths" ]; then printf '%s\n' "$paths" | sed "s/^/[$lane] /"; fi
  if [ "$status" -eq 0 ]; then
    summary+=("lane $lane: PASSED in ${seconds} s")
  else
    summary+=("lane $lane: FAILED (ctest status $status) in ${seconds} s")
    failed=1
  fi
  tar_path=$(printf '%s\n' "$paths" | grep -E '^\[mount path\] tar-index.*loop slices' || true)
  if [ -n "$tar_path" ]; then summary+=("  ${tar_path#\[mount path\] }"); fi
done
echo "== lanes summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
