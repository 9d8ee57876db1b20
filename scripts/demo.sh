#!/usr/bin/env bash
# The main job on the built-in example: install what is needed, build, turn the three example
# layer trees into EROFS images, compose them into one GPT-partitioned read-only VMDK disk, and
# check the result with qemu-img (and sgdisk on the raw image QEMU presents); then the same
# layers protected by dm-verity, composed with --verity on and verified.
# Builds only the command (the test command builds the rest, reusing these objects: same build
# dir, same options). EVMDK_CLI=/usr/bin/erofs-vmdk runs the demo against an installed
# command instead (scripts/check-package.sh does, after dpkg -i).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
if [ -n "${EVMDK_CLI:-}" ]; then
  cli=$EVMDK_CLI
else
  cmake -S . -B build -G Ninja -DEVMDK_WERROR=ON >/dev/null
  cmake --build build -j"$(nproc)" --target erofs-vmdk
  cli=build/tools/erofs-vmdk
fi
echo "== using $("$cli" --version) ($cli)"

out=${1:-out/demo}
rm -rf "$out"
mkdir -p "$out/trees"
cp -a examples/layers/base examples/layers/middle examples/layers/top "$out/trees/"
# What git cannot store: overlayfs-style whiteouts and an opaque directory.
mknod "$out/trees/middle/etc/motd" c 0 0 2>/dev/null || { mkdir -p "$out/trees/middle/etc"; mknod "$out/trees/middle/etc/motd" c 0 0; }
mknod "$out/trees/middle/opt/app/legacy.conf" c 0 0
mkdir -p "$out/trees/top/usr/share/doc"
setfattr -n trusted.overlay.opaque -v y "$out/trees/top/usr/share/doc"

for layer in base middle top; do
  mkfs.erofs --quiet -T 0 "$out/$layer.erofs" "$out/trees/$layer" >/dev/null
done

echo "== compose (top layer first)"
"$cli" compose --mode gpt -o "$out/disk" "$out/top.erofs" "$out/middle.erofs" "$out/base.erofs"
ls -l "$out/disk"

echo "== lint"
"$cli" lint "$out/disk/disk.vmdk"

echo "== qemu-img info"
qemu-img info -f vmdk "$out/disk/disk.vmdk"

echo "== sgdisk -v on the raw image QEMU presents"
qemu-img convert -f vmdk -O raw "$out/disk/disk.vmdk" "$out/disk.raw"
sgdisk -v "$out/disk.raw"

echo "== dm-verity: a hash tree per layer (copies), composed with --verity on, verified"
mkdir -p "$out/verity"
for layer in base middle top; do
  cp "$out/$layer.erofs" "$out/verity/$layer.erofs"
  "$cli" verity format "$out/verity/$layer.erofs" | sed -n "s|^root hash: *|$layer root hash |p"
done
"$cli" compose --mode gpt --verity on -o "$out/disk-verity" \
  "$out/verity/top.erofs" "$out/verity/middle.erofs" "$out/verity/base.erofs"
"$cli" verify "$out/disk-verity"
echo "storage.json: $(grep -c 'X-kata.dmverity.roothash=' "$out/disk-verity/storage.json") lowers carry a root hash"

echo "== demo done: disk at $out/disk/disk.vmdk (dm-verity protected: $out/disk-verity/disk.vmdk)"
