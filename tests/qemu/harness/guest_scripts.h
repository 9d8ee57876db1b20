#pragma once
// The two shell scripts that live in every test initramfs: /init (PID 1: mounts the pseudo
// filesystems, loads the kernel modules, runs the job, powers off) and /lib/evmdk/lib.sh (the
// helpers scenario scripts use to report results in the strict format the host parses).
//
// Result protocol, one line each, written to /dev/ttyS1 (the host's "results" file) and echoed
// on the console (ttyS0) so the console log shows them in context:
//   EVMDK-RESULT <name> PASS|FAIL <detail...>
//   EVMDK-VALUE <name> <number>
//   EVMDK-EXIT <status of the scenario script>
//   EVMDK-DONE
// Nothing else is ever written to ttyS1, so the host can reject any other line.
#include <string_view>

namespace evmdk::qemu {

inline constexpr std::string_view kGuestInit = R"INIT(#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /run /tmp /mnt
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
. /lib/evmdk/lib.sh
echo "EVMDK-BOOTED uptime=$(evmdk_uptime)"
# Module order comes from the host (dependencies first). A failing insmod is reported, not
# fatal: the scenario's own checks then say what is missing.
# A run's extra modules (GuestConfig::extra_modules, e.g. virtio-pmem's) come in its job
# archive as /job/modules, loaded after the base list.
for list in /etc/evmdk/modules /job/modules; do
  [ -f "$list" ] || continue
  while read -r module; do
    [ -n "$module" ] || continue
    if ! out=$(insmod "/lib/modules/$module" 2>&1); then
      case "$out" in
        *"File exists"*) ;;
        *) echo "EVMDK-INSMOD-FAILED $module: $out" ;;
      esac
    fi
  done < "$list"
done
echo "EVMDK-MODULES-LOADED uptime=$(evmdk_uptime)"
status=0
if [ -f /job/scenario.sh ]; then
  (cd /job && . /lib/evmdk/lib.sh && . /job/scenario.sh)
  status=$?
else
  echo "no /job/scenario.sh in the initramfs"
  status=127
fi
evmdk_emit "EVMDK-EXIT $status"
sync
evmdk_emit "EVMDK-DONE"
poweroff -f
# poweroff should not return; never let PID 1 exit (that panics the guest).
while :; do sleep 1; done
)INIT";

inline constexpr std::string_view kGuestLib = R"LIB(# Helpers for scenario scripts (sourced by /init and by each scenario).
evmdk_uptime() { cut -d' ' -f1 /proc/uptime; }

# One protocol line to the results port and the console.
evmdk_emit() {
  echo "$*" > /dev/ttyS1
  echo "$*"
}

# Single line, no control characters: details must not break the line protocol.
evmdk_oneline() { printf '%s' "$*" | tr '\n\r\t' '   ' | tr -d '\000-\037\177' | cut -c1-400; }

# evmdk_result NAME PASS|FAIL [DETAIL...]
evmdk_result() {
  name=$1; status=$2; shift 2
  evmdk_emit "EVMDK-RESULT $name $status $(evmdk_oneline "$*")"
}

# evmdk_value NAME NUMBER (for benchmarks)
evmdk_value() { evmdk_emit "EVMDK-VALUE $1 $2"; }

# evmdk_check NAME COMMAND...: PASS when the command succeeds; its output is the detail.
# Note: the helpers use the globals name, out, rc and status; scenario scripts should not.
evmdk_check() {
  name=$1; shift
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    evmdk_result "$name" PASS "$out"
    return 0
  fi
  echo "--- $name failed (status $rc): $*"
  echo "$out"
  evmdk_result "$name" FAIL "status $rc: $out"
  return 1
}

# evmdk_check_fails NAME COMMAND...: PASS when the command fails; its output is the detail.
evmdk_check_fails() {
  name=$1; shift
  if out=$("$@" 2>&1); then
    echo "--- $name unexpectedly succeeded: $*"
    echo "$out"
    evmdk_result "$name" FAIL "unexpectedly succeeded: $out"
    return 1
  fi
  evmdk_result "$name" PASS "$out"
}

# evmdk_expect_eq NAME ACTUAL EXPECTED
evmdk_expect_eq() {
  if [ "$2" = "$3" ]; then
    evmdk_result "$1" PASS "$2"
  else
    evmdk_result "$1" FAIL "got '$2', expected '$3'"
    return 1
  fi
}

# evmdk_wait_serial SERIAL [SECONDS]: prints /dev/<disk> of the virtio disk with that serial.
evmdk_wait_serial() {
  tries=$(( ${2:-20} * 10 ))
  while [ "$tries" -gt 0 ]; do
    for serial_file in /sys/block/*/serial; do
      [ -f "$serial_file" ] || continue
      if [ "$(cat "$serial_file")" = "$1" ]; then
        disk=${serial_file%/serial}
        echo "/dev/${disk##*/}"
        return 0
      fi
    done
    usleep 100000
    tries=$((tries - 1))
  done
  echo "no disk with serial $1 appeared" >&2
  return 1
}

# evmdk_wait_path PATH [SECONDS]: waits until PATH exists (e.g. /dev/pmem0p2, whose node
# devtmpfs creates once the driver has probed the device and read its partition table).
evmdk_wait_path() {
  tries=$(( ${2:-20} * 10 ))
  while [ ! -e "$1" ]; do
    [ "$tries" -gt 0 ] || { echo "$1 did not appear" >&2; return 1; }
    usleep 100000
    tries=$((tries - 1))
  done
  echo "$1"
}

# What a clean teardown must leave: no overlay/erofs/ext4 mounts, no bound loop device, no
# cgroup below the root one, no device-mapper device. Each prints what is left over and fails
# if anything is.
evmdk_leftover_mounts() {
  left=$(grep -E ' (overlay|erofs|ext4|virtiofs) ' /proc/mounts)
  [ -z "$left" ] || { echo "still mounted: $left"; return 1; }
}
evmdk_leftover_loops() {
  left=""
  for backing in /sys/block/loop*/loop/backing_file; do
    [ -f "$backing" ] && left="$left ${backing#/sys/block/} "
  done
  [ -z "$left" ] || { echo "loop devices still bound:$left"; return 1; }
}
evmdk_leftover_cgroups() {
  left=$(find /sys/fs/cgroup -mindepth 1 -type d)
  [ -z "$left" ] || { echo "cgroups left: $left"; return 1; }
}
# Every dm device is a block device in /sys/block, named (e.g. a verity lower) in dm/name.
evmdk_leftover_dm() {
  left=""
  for dm in /sys/block/dm-*; do
    [ -e "$dm" ] || continue
    left="$left ${dm##*/}($(cat "$dm/dm/name" 2>/dev/null))"
  done
  [ -z "$left" ] || { echo "device-mapper devices left:$left"; return 1; }
}
)LIB";

}  // namespace evmdk::qemu
