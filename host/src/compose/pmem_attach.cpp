#include "evmdk/host/compose/pmem_attach.h"

#include <fmt/format.h>

#include "evmdk/checked_math.h"
#include "evmdk/contract/markers.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/qemu.h"

namespace evmdk::host {
namespace {

constexpr uint64_t kSector = 512;

std::string layer_name(const ComposeResult& result, size_t index) {
  const auto& layer = result.layers[index];
  if (result.mode == ComposeMode::Flat) {
    return index == 0 ? fmt::format("fsmeta ({})", layer.path)
                      : fmt::format("device {} ({})", index, layer.path);
  }
  return fmt::format("layer {} ({})", index, layer.path);
}

// The guest reads the device on the root bus by its slot and function: QEMU's addr=SS.F.
std::string qemu_pci_addr(const std::string& address) {
  return address.substr(8, 2) + "." + address.substr(11, 1);
}

}  // namespace

DiskAttach parse_disk_attach(const std::string& text, const std::string& option) {
  if (text == "blk") return DiskAttach::Blk;
  if (text == "pmem") return DiskAttach::Pmem;
  throw Error("{} '{}': expected blk or pmem", option, text);
}

const char* to_string(DiskAttach attach) { return attach == DiskAttach::Pmem ? "pmem" : "blk"; }

contract::DaxFallback parse_dax_fallback(const std::string& text, const std::string& option) {
  if (text == "error") return contract::DaxFallback::Error;
  if (text == "warn") return contract::DaxFallback::Warn;
  throw Error("{} '{}': expected error or warn", option, text);
}

uint64_t pmem_padded_sectors(uint64_t sectors) {
  constexpr uint64_t unit = kPmemDeviceAlignment / kSector;
  auto padded = add_checked<uint64_t>(sectors, unit - 1);
  if (!padded) throw Error("disk of {} sectors: too large to pad to 2 MiB", sectors);
  return *padded / unit * unit;
}

void check_pmem_options(const ComposeOptions& compose, const std::vector<LayerInput>& inputs) {
  const PmemAttachOptions& options = compose.pmem;
  if (!options.enabled()) return;
  if (compose.format == DiskFormat::Vmdk) {
    throw Error(
        "--attach pmem needs a raw image: QEMU maps a file into the guest, not a VMDK "
        "descriptor (use --format raw or auto)");
  }
  if (compose.fdset && compose.first_fdset_id < 3) {
    throw Error(
        "--attach pmem --fdset: QEMU maps disk.img from the fd it inherits, /proc/self/fd/N "
        "with N = --first-fdset, so N must be 3 or more (0-2 are stdin, stdout, stderr); "
        "got {}",
        compose.first_fdset_id);
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool verity = inputs[i].verity.has_value();
    for (const auto& option : inputs[i].extra_options) {
      verity = verity || contract::is_dmverity_option(option);
    }
    if (verity) {
      throw Error("layer {} ({}): --attach pmem with dm-verity: {}", i, inputs[i].path,
                  kDaxVerityConflict);
    }
  }
  if (options.pci_address.empty()) return;
  const std::string& address = options.pci_address;
  try {
    (void)contract::decode_pmem_source(std::string(contract::kPmemPciSourcePrefix) + address);
  } catch (const std::exception&) {
    throw Error(
        "--pmem-pci-addr '{}': expected DDDD:BB:DD.F in lower-case hex (domain, bus, device "
        "below 0x20, function 0-7), e.g. 0000:00:10.0",
        address);
  }
  if (address.compare(0, 8, "0000:00:") != 0) {
    throw Error(
        "--pmem-pci-addr '{}': only a function on the root bus (0000:00:DD.F) can be placed "
        "with QEMU's addr=; give the device's bus yourself and let the guest scan (omit the "
        "option)",
        address);
  }
}

void check_pmem_layout(const ComposeResult& result) {
  constexpr uint64_t unit = kPmemDaxAlignment / kSector;
  for (size_t i = 0; i < result.layers.size(); ++i) {
    const auto& layer = result.layers[i];
    uint64_t first = layer.first_lba, count = 0;
    const char* what = "partition";
    if (result.mode == ComposeMode::Gpt) {
      count = layer.partition_sectors;
    } else if (result.mode == ComposeMode::Flat) {
      count = layer.sectors;
      what = i == 0 ? "filesystem" : "blob";
    } else {
      continue;  // raw: the layer is the whole device, which starts at 0 and is padded
    }
    if (first % unit != 0 || count % unit != 0) {
      throw Error(
          "{}: --attach pmem: its {} spans disk bytes {}..{}, which do not start and end on "
          "4 KiB: the guest kernel cannot map it for DAX{}",
          layer_name(result, i), what, first * kSector, (first + count) * kSector,
          layer.info.block_size() < kPmemDaxAlignment
              ? fmt::format(" (its block size is {}; rebuild with 4096-byte blocks)",
                            layer.info.block_size())
              : std::string());
    }
  }
}

void make_pmem_storage(Storage& storage, const PmemAttachOptions& options) {
  contract::PmemSource source;
  if (!options.pci_address.empty()) source.pci_address = options.pci_address;
  storage.driver = std::string(contract::kPmemDriver);
  storage.source = contract::encode_pmem_source(source);
  auto dax = contract::encode_dax_options({options.dax_fallback});
  storage.options.insert(storage.options.end(), dax.begin(), dax.end());
}

void add_pmem_attach_json(nlohmann::json& qemu, const PmemAttachInputs& in) {
  if (in.size == 0 || in.size % kPmemDeviceAlignment != 0) {
    throw Error("pmem disk {}: size {} is not a positive multiple of 2 MiB", in.disk_path, in.size);
  }
  std::string mem_path =
      in.inherited_fd ? fmt::format("/proc/self/fd/{}", *in.inherited_fd) : in.disk_path;
  std::string memdev = in.serial + "-mem";
  nlohmann::json device_add{{"driver", "virtio-pmem-pci"}, {"memdev", memdev}, {"id", in.serial}};
  std::string device = fmt::format("virtio-pmem-pci,memdev={},id={}", memdev, in.serial);
  if (!in.pci_address.empty()) {
    device_add["addr"] = qemu_pci_addr(in.pci_address);
    device += ",addr=" + qemu_pci_addr(in.pci_address);
  }
  nlohmann::json pmem{
      {"size", in.size},
      // The room the device takes in the VM's memory-device region: -m ...,maxmem= must be
      // at least RAM plus the sum of this over every pmem disk the VM will ever get.
      {"maxmem_bytes", in.size},
      {"memory_backend",
       {{"qom-type", "memory-backend-file"},
        {"id", memdev},
        {"mem-path", mem_path},
        {"size", in.size},
        {"share", true},
        {"readonly", true}}},
      {"device_add", device_add},
      {"args",
       {"-object",
        fmt::format("memory-backend-file,id={},share=on,readonly=on,mem-path={},size={}", memdev,
                    qemu_escape(mem_path), in.size),
        "-device", device}}};
  if (in.inherited_fd) {
    pmem["inherit_fd"] = {{"fd", *in.inherited_fd}, {"path", in.disk_path}, {"read-only", true}};
  }
  qemu["pmem"] = std::move(pmem);
  // Cloud Hypervisor's --pmem takes key=value pairs separated by commas: a path holding one
  // cannot be given there.
  if (in.disk_path.find(',') == std::string::npos) {
    qemu["cloud_hypervisor"] = {{"pmem", fmt::format("file={},discard_writes=on", in.disk_path)}};
  }
}

void finish_pmem_outputs(ComposeResult& result, const ComposeOptions& options) {
  if (!options.pmem.enabled()) return;
  for (auto& storage : result.storages) make_pmem_storage(storage, options.pmem);
  PmemAttachInputs inputs;
  inputs.disk_path = result.disk_path;
  inputs.serial = result.serial;
  auto size = mul_checked<uint64_t>(result.disk_sectors, kSector);
  if (!size) throw Error("disk of {} sectors: size overflows", result.disk_sectors);
  inputs.size = *size;
  inputs.pci_address = options.pmem.pci_address;
  if (options.fdset) inputs.inherited_fd = options.first_fdset_id;
  add_pmem_attach_json(result.qemu, inputs);
  result.layout.attach = to_string(options.pmem.attach);
}

}  // namespace evmdk::host
