#pragma once
// How a VMM attaches a composed disk: qemu.json's QEMU arguments (QMP blockdev-add/device_add,
// -blockdev and -drive command lines, fd sets) and, for a raw image, the equivalent for Cloud
// Hypervisor, Firecracker and libkrun. See docs/runtime-integration.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace evmdk::host {

struct AttachInputs {
  std::string disk_path;  // the descriptor, the layer (raw mode) or disk.img
  std::string format;     // "vmdk" or "raw"
  std::string serial;
  std::vector<std::string> fdset_files;  // fdset mode: file of fdset first_fdset_id + i
  uint32_t first_fdset_id = 1;
  // Add the cloud-hypervisor, firecracker and libkrun entries (raw images only: they read no
  // VMDK).
  bool other_vmms = false;
};

// The contents of qemu.json.
nlohmann::json vmm_attach_json(const AttachInputs& inputs);

}  // namespace evmdk::host
