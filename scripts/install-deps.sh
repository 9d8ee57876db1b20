#!/usr/bin/env bash
# Installs everything erofs-vmdk needs to build, run and test, from Debian 12 packages only.
# Idempotent: packages already present are left alone; apt-get runs only when something is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  libblkid-dev libmount-dev liburing-dev libfmt-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libcli11-dev libssl-dev libcryptsetup-dev zlib1g-dev
  # fuzzing (libFuzzer ships with clang)
  clang
  # runtime and test tools
  erofs-utils e2fsprogs util-linux mount qemu-utils qemu-system-x86 linux-image-amd64
  busybox-static cpio gdisk fdisk attr cryptsetup-bin kmod procps psmisc
  # raw images assembled by reflink (tests/host/raw_image_root_test.cpp, bench/raw_image_bench)
  xfsprogs btrfs-progs
  # packaging checks (scripts/check-package.sh): man --warnings, script(1) for a terminal,
  # file and dpkg-shlibdeps for cpack -G DEB, zsh to check the zsh completion's syntax
  man-db bsdutils file dpkg-dev zsh
  # compatibility lanes (scripts/install-lanes.sh, test-lanes.sh): .ko.xz modules of kernel 6.12
  xz-utils
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
