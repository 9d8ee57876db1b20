#pragma once
// A composed disk attached as virtio-pmem (compose/hook --attach pmem): the rules such a disk
// must meet (a raw image padded to 2 MiB, every partition and blob on 4 KiB, no dm-verity),
// the storages that tell the guest to find the device without a serial and mount it with
// dax=always, and qemu.json's "pmem" (memory-backend-file + virtio-pmem-pci, the maxmem it
// takes) and "cloud_hypervisor" entries. See docs/pmem.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evmdk/contract/pmem.h"
#include "evmdk/storage_spec.h"

namespace evmdk::host {

struct ComposeResult;
struct LayerInput;

// How the VM gets the disk: virtio-blk (the default, unchanged) or virtio-pmem with DAX.
enum class DiskAttach { Blk, Pmem };

// blk|pmem; `option` names the option in the error.
DiskAttach parse_disk_attach(const std::string& text, const std::string& option = "--attach");
const char* to_string(DiskAttach attach);
// error|warn.
contract::DaxFallback parse_dax_fallback(const std::string& text,
                                         const std::string& option = "--dax-fallback");

// What --attach pmem asks of compose (ComposeOptions::pmem).
struct PmemAttachOptions {
  DiskAttach attach = DiskAttach::Blk;
  contract::DaxFallback dax_fallback = contract::DaxFallback::Error;
  // The virtio-pmem PCI function the VMM will place the device at (DDDD:BB:DD.F): the storage
  // names it (pmem-pci:<address>) and the device arguments carry addr=; empty: the guest scans.
  std::string pci_address;
  bool enabled() const { return attach == DiskAttach::Pmem; }
};

// Every virtio-pmem device must be a multiple of 2 MiB (the guest's nd_pmem maps no other
// size, Cloud Hypervisor refuses it); partitions and blobs inside it start and end on 4 KiB.
inline constexpr uint64_t kPmemDeviceAlignment = uint64_t{2} << 20;
inline constexpr uint64_t kPmemDaxAlignment = 4096;

// The refusal for DAX together with dm-verity (the guest says the same).
inline constexpr std::string_view kDaxVerityConflict =
    "DAX and dm-verity exclude each other (dm-verity devices cannot do DAX): choose one";

// `sectors` (512 bytes) rounded up to the next multiple of 2 MiB. Throws on overflow.
uint64_t pmem_padded_sectors(uint64_t sectors);

struct ComposeOptions;

// Throws evmdk::Error for a --attach pmem request that cannot be met, before any layer is read:
// --format vmdk, a malformed or non-root-bus PCI address, --fdset with a first fd set below 3
// (with pmem its number is the fd QEMU inherits), a layer of `inputs` (top first) that asks
// for dm-verity (its own, or dm-verity options among its extra options), naming it. Nothing
// for --attach blk.
void check_pmem_options(const ComposeOptions& options, const std::vector<LayerInput>& inputs);

// Throws evmdk::Error, naming the layer, when a gpt partition or a flat-mode fsmeta/blob of the
// planned disk does not start and end on 4 KiB.
void check_pmem_layout(const ComposeResult& result);

// The storage as a pmem lower: driver nvdimm, source pmem-scan (or pmem-pci:<address>), and
// the DAX options appended.
void make_pmem_storage(Storage& storage, const PmemAttachOptions& options);

struct PmemAttachInputs {
  std::string disk_path;  // absolute disk.img
  std::string serial;     // names the device (<serial>) and its memory backend (<serial>-mem)
  uint64_t size = 0;      // bytes, a multiple of 2 MiB
  std::string pci_address;
  // --fdset: QEMU inherits disk.img as this fd and maps /proc/self/fd/<fd> (memory-backend-file
  // opens mem-path with open(2): /dev/fdset/N is not a file to it).
  std::optional<uint32_t> inherited_fd;
};

// Adds "pmem" (QEMU) and "cloud_hypervisor" to qemu.json (`qemu`).
void add_pmem_attach_json(nlohmann::json& qemu, const PmemAttachInputs& inputs);

// compose's last step for --attach pmem: every storage made a pmem lower, qemu.json's pmem
// entries, layout.json's "attach". Nothing for --attach blk.
void finish_pmem_outputs(ComposeResult& result, const ComposeOptions& options);

}  // namespace evmdk::host
