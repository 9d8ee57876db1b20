#!/usr/bin/env bash
# Unpacks the newer QEMU (10.x) and guest kernel (6.12) of Debian's bookworm-backports suite
# into BUILD_DIR/lanes, beside the system's QEMU 7.2 and kernel 6.1 and without installing
# them (apt-get download + dpkg -x), for the compatibility lanes of scripts/test.sh. Writes
# BUILD_DIR/lanes/lanes.env: shell assignments naming what each lane boots.
#
# Idempotent: the suite is added to apt's sources only when no source lists it, apt-get update
# runs only when apt knows no backports version yet, and packages are downloaded only when
# the stamp of what was unpacked differs from the suite's current versions.
# Usage: scripts/install-lanes.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
lanes_dir="$(pwd)/$build_dir/lanes"
suite=bookworm-backports

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

# --- the suite in apt's sources -----------------------------------------------------------
# Only files apt reads count (*.list, *.sources), not e.g. a disabled copy.
if ! grep -qs -- "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
     /etc/apt/sources.list.d/*.sources; then
  # The same mirror the system's bookworm packages come from.
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
           grep -v security | head -n1)
  if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  fi
  if [ -z "$mirror" ]; then
    echo "install-lanes: cannot find the Debian mirror in apt's sources" >&2
    exit 1
  fi
  echo "install-lanes: adding $suite ($mirror) to apt's sources"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" | "${sudo_cmd[@]}" tee /etc/apt/sources.list.d/$suite.sources >/dev/null
fi

backports_version() {  # PACKAGE -> its version in the suite, or nothing
  apt-cache madison "$1" 2>/dev/null | awk -v s="$suite" '$0 ~ s"/main" {print $3; exit}'
}
if [ -z "$(backports_version qemu-system-x86)" ]; then
  "${sudo_cmd[@]}" apt-get update -qq
fi
qemu_version=$(backports_version qemu-system-x86)
kernel_meta_version=$(backports_version linux-image-amd64)
if [ -z "$qemu_version" ] || [ -z "$kernel_meta_version" ]; then
  echo "install-lanes: $suite has no qemu-system-x86 or linux-image-amd64 (apt-cache madison)" >&2
  exit 1
fi
# linux-image-amd64 is a metapackage: the kernel and its modules are in the package it depends on.
kernel_package=$(apt-cache show "linux-image-amd64=$kernel_meta_version" |
                 sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -n1)
if [ -z "$kernel_package" ]; then
  echo "install-lanes: cannot tell which kernel linux-image-amd64=$kernel_meta_version depends on" >&2
  exit 1
fi

qemu_packages=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils)
stamp="qemu=$qemu_version kernel=$kernel_package=$kernel_meta_version"
if [ "$(cat "$lanes_dir/stamp" 2>/dev/null)" = "$stamp" ] && [ -f "$lanes_dir/lanes.env" ]; then
  echo "install-lanes: up to date ($stamp)"
  exit 0
fi

echo "install-lanes: unpacking $stamp into $lanes_dir"
rm -rf "$lanes_dir"
mkdir -p "$lanes_dir/debs" "$lanes_dir/qemu-10" "$lanes_dir/kernel-6.12"
# apt's sandbox user cannot write into a root-owned build tree; the download is by name from
# apt's own signed index, so running it unsandboxed changes nothing about what is trusted.
(cd "$lanes_dir/debs" &&
  apt-get download -q -o APT::Sandbox::User=root \
    "${qemu_packages[@]/%/=$qemu_version}" "$kernel_package")
for deb in "$lanes_dir"/debs/qemu-*.deb; do dpkg -x "$deb" "$lanes_dir/qemu-10"; done
dpkg -x "$lanes_dir"/debs/"$kernel_package"_*.deb "$lanes_dir/kernel-6.12"
rm -rf "$lanes_dir/debs"

qemu_binary="$lanes_dir/qemu-10/usr/bin/qemu-system-x86_64"
kernel=$(ls "$lanes_dir"/kernel-6.12/boot/vmlinuz-* | head -n1)
kernel_release=${kernel##*/vmlinuz-}
modules_root="$lanes_dir/kernel-6.12/lib/modules"
[ -d "$modules_root" ] || modules_root="$lanes_dir/kernel-6.12/usr/lib/modules"
# The package's postinst would make modules.dep; nothing here runs it.
depmod -b "${modules_root%/lib/modules}" "$kernel_release"
"$qemu_binary" --version | head -n1

# The data package has no bios-256k.bin (Debian ships SeaBIOS separately): the lane searches
# QEMU 10's own data directory first, then the system's SeaBIOS.
cat > "$lanes_dir/lanes.env" <<EOF
# Written by scripts/install-lanes.sh: what the compatibility lanes boot.
LANE_QEMU10_BINARY='$qemu_binary'
LANE_QEMU10_DATADIRS='$lanes_dir/qemu-10/usr/share/qemu:/usr/share/seabios'
LANE_QEMU10_MODULE_DIR='$lanes_dir/qemu-10/usr/lib/x86_64-linux-gnu/qemu'
LANE_KERNEL612='$kernel'
LANE_KERNEL612_MODULES='$modules_root/$kernel_release'
EOF
echo "$stamp" > "$lanes_dir/stamp"
echo "install-lanes: done"
