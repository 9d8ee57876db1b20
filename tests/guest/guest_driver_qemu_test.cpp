// The guest driver in the real 6.1 guest kernel (busybox initramfs, TCG): the 6.1 code paths
// the host kernel cannot show — GPT partitions exposed by the kernel, `serial:` disk lookup,
// the overlay through one page of relative mount(2) data (no lowerdir+), cgroup v2 kill —
// with `erofs-vmdk guest mount` and `guest teardown` run as a guest agent would.
#include "../qemu/scenario.h"
#include "guest_fixture.h"

namespace evmdk::qemu {
namespace {

class GuestDriverInQemu : public QemuTest {};

TEST_F(GuestDriverInQemu, MountsGptLayersAndTearsDownWithAProcessInACgroup) {
  EVMDK_REQUIRE_TOOLS("sgdisk", "setfattr");
  test::LayerSpec top;
  top.files = {{"etc/motd", "top\n"}};
  top.whiteouts = {"etc/old"};
  top.opaque_dirs = {"data"};
  test::LayerSpec middle;
  middle.files = {{"bin/tool", "tool 2\n"}};
  test::LayerSpec base;
  base.files = {{"etc/motd", "base\n"}, {"etc/old", "old\n"}, {"bin/tool", "tool 1\n"}, {"data/hidden", "x\n"}};
  test::GptLayerDisk disk(temp_, {top, middle, base});
  std::string upper = test::make_ext4_image(temp_);
  auto storages = test::gpt_storages("serial:evmdk-layers", 3, "serial:evmdk-upper");
  GuestConfig cfg = config("guest-driver");
  cfg.drives = {{disk.image(), "raw", true, "evmdk-layers"}, {upper, "raw", false, "evmdk-upper"}};
  auto job = scenario_job(to_json(storages).dump(1), R"SH(
r=/run/containers/c/rootfs
evmdk_check mount erofs-vmdk guest mount -s /job/storage.json -i c -r $r
evmdk_check partitions-native sh -c '! erofs-vmdk guest status -i c | grep -q /dev/loop'
evmdk_check overlay-6.1-path sh -c 'erofs-vmdk guest status -i c >/dev/null && grep -q "lowerdir=lower-0:lower-1:lower-2" /proc/mounts'
evmdk_expect_eq top-wins "$(cat $r/etc/motd)" top
evmdk_expect_eq middle-over-base "$(cat $r/bin/tool)" "tool 2"
evmdk_check whiteout sh -c "! test -e $r/etc/old"
evmdk_check opaque sh -c "! test -e $r/data/hidden"
evmdk_check write sh -c "echo kept > $r/written"
mkdir /sys/fs/cgroup/c
sh -c "echo \$\$ > /sys/fs/cgroup/c/cgroup.procs; trap '' TERM; cd $r; exec sleep 1000" &
sleep 0.5
evmdk_check teardown erofs-vmdk guest teardown -i c --cgroup /sys/fs/cgroup/c
evmdk_check no-mounts sh -c '! grep -q -e /run/erofs-vmdk -e /run/containers /proc/mounts'
evmdk_check no-cgroup sh -c '! test -e /sys/fs/cgroup/c'
evmdk_check no-dirs sh -c '! test -e /run/erofs-vmdk/c && ! test -e /run/erofs-vmdk/c.journal.json && ! test -e /run/erofs-vmdk/.journals/c.json'
evmdk_check_clean after-teardown
# The same layers found by Kata PCI path (slot of the virtio device on the root bus).
slot=$(readlink /sys/block/vda | sed -n 's#.*/0000:00:\([0-9a-f][0-9a-f]\)\.0/.*#\1#p')
sed "s#PCI_PATH#$slot#" /job/lowers-by-pci.json > /tmp/pci.json
evmdk_check pci-path-mount sh -c "test -n '$slot' && erofs-vmdk guest mount -s /tmp/pci.json -i p -r /run/containers/p/rootfs"
evmdk_expect_eq pci-path-view "$(cat /run/containers/p/rootfs/etc/motd 2>&1)" top
evmdk_check pci-path-teardown erofs-vmdk guest teardown -i p
evmdk_check_clean after-pci-path-teardown
mkdir -p /mnt/upper
evmdk_check upper-kept sh -c 'mount -t ext4 /dev/vdb /mnt/upper && grep -q kept /mnt/upper/upper/written; umount /mnt/upper'
)SH");
  job.files["lowers-by-pci.json"] = to_json(test::gpt_storages("PCI_PATH", 3, "")).dump(1);
  auto outcome = run_guest(env_, cfg, job);
  EVMDK_EXPECT_GUEST_PASSED(
      outcome, expected_checks({"mount", "partitions-native", "overlay-6.1-path", "top-wins",
                                "middle-over-base", "whiteout", "opaque", "write", "teardown",
                                "no-mounts", "no-cgroup", "no-dirs", "pci-path-mount",
                                "pci-path-view", "pci-path-teardown", "upper-kept"},
                               {"after-teardown", "after-pci-path-teardown"}));
}

}  // namespace
}  // namespace evmdk::qemu
