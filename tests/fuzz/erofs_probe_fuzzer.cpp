// libFuzzer target for the EROFS superblock and device-table probe (host/probe.h), the code
// `inspect`, `compose`, `hook` and `verify` run on every layer file and partition. The input is
// the image: superblock at byte 1024, device table where devt_slotoff points. Also probes it at
// an offset inside a larger file (a GPT partition, as verify and inspect do). Anything accepted
// must be self-consistent: the filesystem fits the file, the table has the announced slots.
#include <cstddef>
#include <cstdint>

#include "evmdk/error.h"
#include "evmdk/host/erofs/probe.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;

void check_info(const evmdk::host::ErofsInfo& info, uint64_t size) {
  check(info.blkszbits >= 9 && info.blkszbits <= 12, "block size in the supported range");
  check(info.blocks > 0, "a filesystem has blocks");
  check(info.fs_size == info.blocks << info.blkszbits, "fs_size = blocks << blkszbits");
  check(info.fs_size <= size, "the filesystem fits the file");
  check(info.devices.size() == info.extra_devices || info.extra_devices == 0 ||
            !(info.feature_incompat & evmdk::host::erofs_feature::kIncompatDeviceTable),
        "every announced device slot is read");
  // Devices inside the file (a tar-index layer's tar) are part of the layer: each lies wholly
  // in the file, and the layer ends at the last of them (or the filesystem).
  check(info.device_in_file.size() == info.devices.size(), "every device is classified");
  check(info.layer_end >= info.fs_size && info.layer_end <= size, "the layer fits the file");
  size_t outside = 0;
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const auto& slot = info.devices[i];
    if (!info.device_in_file[i]) {
      ++outside;
      continue;
    }
    check(slot.mapped_blkaddr > 0 && slot.blocks > 0, "an in-file device is mapped");
    check((slot.mapped_blkaddr + slot.blocks) << info.blkszbits <= info.layer_end,
          "an in-file device ends within the layer");
  }
  check(outside == info.devices_outside_file(), "devices outside the file counted");
  check(outside == 0 || !info.first_device_outside_file().empty(), "the first outside is named");
  (void)evmdk::host::to_json(info).dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static evmdk::fuzz::MemFile file("erofs-probe-fuzz");
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  file.set(bytes);
  try {
    check_info(evmdk::host::probe_image_at(file.fd(), 0, size, "fuzz"), size);
  } catch (const evmdk::Error&) {
  }
  // The same image as a partition 4 KiB into a disk, bounded by the partition size.
  file.set(std::string(4096, '\0').append(bytes));
  try {
    check_info(evmdk::host::probe_image_at(file.fd(), 4096, size, "fuzz partition"), size);
  } catch (const evmdk::Error&) {
  }
  // And through the path, with libblkid's cross-check, as `inspect` runs it.
  if (size > 0 && data[size - 1] == 0x5a) {
    file.set(bytes);
    try {
      check_info(evmdk::host::probe_layer(file.path()), size);
    } catch (const evmdk::Error&) {
    }
  }
  return 0;
}
