// `inspect` and `compose`: thin over evmdk/host (probe.h, gpt.h, compose.h).
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "commands.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/host/verity/verity_compose.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::cli {
namespace {

namespace fs = std::filesystem;

void print_layer(const host::ErofsInfo& info, const std::string& indent) {
  fmt::print("{}EROFS  {} blocks of {} bytes = {} bytes (file {} bytes)\n", indent, info.blocks,
             info.block_size(), info.fs_size, info.file_size);
  fmt::print("{}uuid   {}\n", indent, info.uuid_string);
  if (!info.volume_name.empty()) fmt::print("{}volume {}\n", indent, info.volume_name);
  fmt::print("{}features {}\n", indent,
             host::feature_names(info.feature_compat, info.feature_incompat));
  if (info.has_checksum) fmt::print("{}checksum {:08x} (valid)\n", indent, info.checksum);
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const auto& d = info.devices[i];
    bool in_file = i < info.device_in_file.size() && info.device_in_file[i];
    fmt::print("{}device {}: {} blocks at blkaddr {} tag '{}' ({})\n", indent, i + 1, d.blocks,
               d.mapped_blkaddr, d.tag,
               in_file ? "inside this file: part of the layer" : "outside this file: a blob");
  }
}

// The file named on the command line, opened once without blocking: a FIFO or device is
// refused with its type instead of hanging inspect.
bool starts_with(const InputFile& file, const std::string& path, uint64_t offset,
                 std::string_view prefix) {
  std::string head(prefix.size(), '\0');
  return pread_full(file.fd.get(), head.data(), head.size(), offset, path) == prefix.size() &&
         head == prefix;
}

// A composed output: the descriptor's directory holds layout.json naming every layer.
nlohmann::json inspect_composed(const std::string& descriptor) {
  auto layout_path = (fs::path(descriptor).parent_path() / host::kLayoutName).string();
  if (!fs::exists(layout_path)) {
    throw Error(
        "{}: a VMDK descriptor without {} beside it; inspect the layers, or the raw "
        "image (qemu-img convert -O raw)",
        descriptor, host::kLayoutName);
  }
  host::Layout layout = host::read_layout(layout_path);
  nlohmann::json layers = nlohmann::json::array();
  nlohmann::json written = host::to_json(layout)["layers"];
  for (size_t i = 0; i < layout.layers.size(); ++i) {
    nlohmann::json entry = written[i];
    if (layout.layers[i].erofs) {
      entry["probe"] = host::to_json(host::probe_layer(layout.layers[i].path));
    }
    layers.push_back(std::move(entry));
  }
  return {{"path", descriptor},
          {"type", "composed"},
          {"mode", layout.mode},
          {"serial", layout.serial},
          {"layers", layers}};
}

nlohmann::json inspect_gpt_disk(const std::string& path) {
  InputFile file = open_input_file(path, "disk image");
  const UniqueFd& fd = file.fd;
  host::gpt::Table table = host::gpt::read_table(fd.get(), path);
  nlohmann::json partitions = nlohmann::json::array();
  for (size_t i = 0; i < table.partitions.size(); ++i) {
    const auto& p = table.partitions[i];
    const uint32_t number = table.partition_number(i);
    std::string name = fmt::format("{} partition {}", path, number);
    nlohmann::json entry{{"number", number},
                         {"first_lba", p.first_lba},
                         {"last_lba", p.last_lba},
                         {"partuuid", host::gpt::format_guid(p.unique)},
                         {"name", p.name}};
    entry["erofs"] = host::to_json(host::probe_image_at(
        fd.get(), p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512, name));
    partitions.push_back(std::move(entry));
  }
  return {{"path", path},
          {"type", "gpt"},
          {"disk_guid", host::gpt::format_guid(table.disk_guid)},
          {"total_sectors", table.total_sectors},
          {"entry_count", table.entry_count},
          {"partitions", partitions}};
}

void run_inspect(const std::string& path, bool json) {
  InputFile file = open_input_file(path, "file");
  if (starts_with(file, path, 0, "# Disk DescriptorFile")) {
    auto result = inspect_composed(path);
    if (json) {
      fmt::print("{}\n", result.dump(2));
      return;
    }
    fmt::print("{}: composed {} disk, serial {}\n", path, result["mode"].get<std::string>(),
               result["serial"].get<std::string>());
    for (const auto& layer : result["layers"]) {
      fmt::print("  layer {}: {}", layer["index"].get<size_t>(), layer["path"].get<std::string>());
      if (layer.contains("partuuid")) {
        fmt::print(" (partition {}, PARTUUID {})", layer["partition"].get<uint32_t>(),
                   layer["partuuid"].get<std::string>());
      }
      if (layer.contains("verity")) {
        fmt::print(" dm-verity root {} (hash area at disk byte {})",
                   layer["verity"]["roothash"].get<std::string>(),
                   layer["verity"]["hash_disk_offset"].get<uint64_t>());
      }
      fmt::print("\n");
    }
    return;
  }
  // An EROFS image has its magic at byte 1024; a composed raw disk has a GPT at LBA 1.
  if (starts_with(file, path, 512, "EFI PART")) {
    auto result = inspect_gpt_disk(path);
    if (json) {
      fmt::print("{}\n", result.dump(2));
      return;
    }
    fmt::print("{}: GPT disk {}, {} sectors, {} partitions\n", path,
               result["disk_guid"].get<std::string>(), result["total_sectors"].get<uint64_t>(),
               result["partitions"].size());
    for (const auto& p : result["partitions"]) {
      fmt::print("  partition {} '{}' LBA {}..{} PARTUUID {}: EROFS uuid {}\n",
                 p["number"].get<size_t>(), p["name"].get<std::string>(),
                 p["first_lba"].get<uint64_t>(), p["last_lba"].get<uint64_t>(),
                 p["partuuid"].get<std::string>(), p["erofs"]["uuid"].get<std::string>());
    }
    return;
  }
  host::ErofsInfo info = host::probe_layer(path);
  // The layer's dm-verity data as compose would use it; a broken sidecar is shown, not fatal
  // (inspect is where one looks to find out why compose refused it).
  nlohmann::json verity{{"sidecar", host::verity_sidecar_path(path)}};
  try {
    if (auto v = host::inspect_verity_layer(path)) {
      verity["state"] = "protected";
      verity["roothash"] = v->sidecar.root_hash;
      verity["hashoffset"] = v->sidecar.hash_offset;
      verity["hash_end"] = v->hash_end;
    } else {
      verity["state"] = "none";
    }
  } catch (const std::exception& error) {
    verity["state"] = "broken";
    verity["error"] = error.what();
  }
  if (json) {
    nlohmann::json out = host::to_json(info);
    out["verity"] = verity;
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print("{}:\n", path);
  print_layer(info, "  ");
  const std::string state = verity["state"];
  if (state == "protected") {
    fmt::print("  dm-verity root {} (tree at byte {}..{})\n", verity["roothash"].get<std::string>(),
               verity["hashoffset"].get<uint64_t>(), verity["hash_end"].get<uint64_t>());
  } else if (state == "none") {
    fmt::print("  dm-verity none (no {})\n", verity["sidecar"].get<std::string>());
  } else {
    fmt::print("  dm-verity BROKEN: {}\n", verity["error"].get<std::string>());
  }
}

struct ComposeArgs {
  std::string mode = "auto";
  std::string order = "top-first";
  std::string output;
  std::vector<std::string> layers;
  bool fdset = false;
  uint32_t first_fdset = 1;
  std::string serial;
  std::string verity = "auto";  // dm-verity policy (host/verity_compose.h)
  std::string format = "vmdk";  // --attach pmem: raw unless given
  bool format_given = false;
  bool allow_copy = false;
  std::string attach = "blk";
  std::string dax_fallback = "error";
  bool dax_fallback_given = false;
  std::string pmem_pci_addr;
  bool json = false;
  bool quiet = false;
};

// --attach pmem and its options, and what it does to --format and --verity (docs/pmem.md).
// Returns the verity policy to apply; prints a note when auto leaves sidecars unused.
host::VerityPolicy apply_attach_args(const ComposeArgs& args, host::ComposeOptions& options) {
  options.pmem.attach = host::parse_disk_attach(args.attach);
  host::VerityPolicy verity = host::parse_verity_policy(args.verity);
  if (!options.pmem.enabled()) {
    if (args.dax_fallback_given || !args.pmem_pci_addr.empty()) {
      throw Error("{} is only for --attach pmem",
                  args.dax_fallback_given ? "--dax-fallback" : "--pmem-pci-addr");
    }
    return verity;
  }
  options.pmem.dax_fallback = host::parse_dax_fallback(args.dax_fallback);
  options.pmem.pci_address = args.pmem_pci_addr;
  if (!args.format_given) options.format = host::DiskFormat::Raw;
  if (options.format == host::DiskFormat::Vmdk) {
    throw Error(
        "--attach pmem with --format vmdk: QEMU maps a file into the guest, not a VMDK "
        "descriptor (use --format raw or auto)");
  }
  if (verity == host::VerityPolicy::kOn) {
    throw Error("--attach pmem with --verity on: {}", host::kDaxVerityConflict);
  }
  if (verity == host::VerityPolicy::kAuto) {
    std::vector<std::string> unused;
    for (const auto& layer : options.layers) {
      if (fs::exists(host::verity_sidecar_path(layer.path))) unused.push_back(layer.path);
    }
    if (!unused.empty()) {
      fmt::print(stderr,
                 "erofs-vmdk: --verity=auto with --attach pmem: dm-verity not used for {} ({})\n",
                 fmt::join(unused, ", "), host::kDaxVerityConflict);
    }
  }
  return host::VerityPolicy::kOff;
}

void run_compose(const ComposeArgs& args) {
  host::ComposeOptions options;
  options.mode = host::parse_compose_mode(args.mode);
  options.order = host::parse_layer_order(args.order);
  options.output_dir = args.output;
  options.fdset = args.fdset;
  options.first_fdset_id = args.first_fdset;
  options.serial = args.serial;
  options.format = host::parse_disk_format(args.format);
  options.allow_copy = args.allow_copy;
  for (const auto& layer : args.layers) options.layers.push_back({layer, {}});
  auto verity = host::apply_verity_policy(options, apply_attach_args(args, options));
  host::ComposeResult result = host::compose(options);
  // Only now: a compose that fails (a missing layer) prints its error and nothing before it.
  if (verity.policy == host::VerityPolicy::kAuto && !verity.unprotected().empty()) {
    fmt::print(stderr, "erofs-vmdk: --verity=auto: not protected by dm-verity (no sidecar): {}\n",
               fmt::join(verity.unprotected(), ", "));
  }
  if (!result.format_note.empty()) fmt::print(stderr, "erofs-vmdk: {}\n", result.format_note);
  if (args.quiet) return;
  if (args.json) {
    fmt::print("{}\n", host::to_json(result.layout).dump(2));
    return;
  }
  if (const auto& raw = result.raw_report) {
    fmt::print("raw image {} on {}: {} bytes shared, {} copied, {} holes{}\n", raw->path,
               raw->filesystem, raw->shared_bytes, raw->copied_bytes, raw->hole_bytes,
               raw->reflinked ? "" : " (not all shared: " + raw->reflink_problem + ")");
  }
  fmt::print("composed {} layer(s) in {} mode: {} ({} sectors, serial {})\n", result.layers.size(),
             host::to_string(result.mode), result.disk_path, result.disk_sectors, result.serial);
  if (options.pmem.enabled()) {
    fmt::print("  attach as virtio-pmem: {} bytes (VM maxmem >= RAM + {}), see qemu.json\n",
               result.disk_sectors * 512, result.disk_sectors * 512);
  }
  for (const auto& layer : result.layers) {
    if (layer.partition_number) {
      fmt::print("  partition {} LBA {}+{} PARTUUID {} <- {}\n", *layer.partition_number,
                 layer.first_lba, layer.sectors, layer.partuuid, layer.path);
    } else {
      fmt::print("  LBA {}+{} <- {}\n", layer.first_lba, layer.sectors, layer.path);
    }
  }
}

}  // namespace

void register_host_commands(CLI::App& app) {
  auto inspect_path = std::make_shared<std::string>();
  auto inspect_json = std::make_shared<bool>(false);
  auto* inspect = app.add_subcommand(
      "inspect", "Probe an EROFS layer, a composed raw GPT disk, or a composed disk.vmdk");
  inspect->add_option("PATH", *inspect_path, "layer image, raw disk image, or disk.vmdk")
      ->required();
  inspect->add_flag("--json", *inspect_json, "print JSON");
  inspect->callback([inspect_path, inspect_json] { run_inspect(*inspect_path, *inspect_json); });

  auto args = std::make_shared<ComposeArgs>();
  auto* compose = app.add_subcommand(
      "compose", "Compose EROFS layers into one read-only disk (see docs/compose.md)");
  compose->add_option("--mode", args->mode, "auto|raw|flat|gpt")
      ->check(CLI::IsMember({"auto", "raw", "flat", "gpt"}))
      ->capture_default_str();
  compose->add_option("--order", args->order, "order of LAYER arguments: top-first|bottom-first")
      ->check(CLI::IsMember({"top-first", "bottom-first"}))
      ->capture_default_str();
  compose->add_option("-o,--output", args->output, "output directory")->required();
  compose->add_flag("--fdset", args->fdset,
                    "name extents /dev/fdset/N in the descriptor (QEMU receives fds)");
  compose->add_option("--first-fdset", args->first_fdset, "fdset id of the first file")
      ->capture_default_str();
  compose->add_option("--serial", args->serial, "virtio serial (default: derived from layers)");
  compose
      ->add_option("--verity", args->verity,
                   "dm-verity: off|auto (protect layers that have a .dmverity sidecar)|on "
                   "(refuse a layer without one); see docs/verity.md")
      ->check(CLI::IsMember({"off", "auto", "on"}))
      ->capture_default_str();
  auto* format =
      compose
          ->add_option("--format", args->format,
                       "gpt/flat disk as: vmdk (descriptor over the layers)|raw (disk.img, layers "
                       "shared by reflink)|auto (raw where reflinks work, else vmdk)")
          ->check(CLI::IsMember({"vmdk", "raw", "auto"}))
          ->capture_default_str();
  compose->add_flag("--allow-copy", args->allow_copy,
                    "--format raw: copy (and report) what cannot be shared by reflink");
  compose
      ->add_option("--attach", args->attach,
                   "how the VM gets the disk: blk (virtio-blk)|pmem (virtio-pmem with DAX: "
                   "raw disk.img padded to 2 MiB; see docs/pmem.md)")
      ->check(CLI::IsMember({"blk", "pmem"}))
      ->capture_default_str();
  auto* dax_fallback = compose
                           ->add_option("--dax-fallback", args->dax_fallback,
                                        "--attach pmem: a guest mount without DAX is an error|warn")
                           ->check(CLI::IsMember({"error", "warn"}))
                           ->capture_default_str();
  compose->add_option("--pmem-pci-addr", args->pmem_pci_addr,
                      "--attach pmem: the PCI function DDDD:BB:DD.F the VMM places the device at "
                      "(default: the guest scans)");
  compose->add_flag("--json", args->json, "print layout.json");
  add_quiet_flag(compose, args->quiet);
  compose
      ->add_option("LAYER", args->layers,
                   "layer images (flat mode: the fsmeta, then its device blobs in slot order)")
      ->required();
  compose->callback([args, format, dax_fallback] {
    args->format_given = format->count() > 0;
    args->dax_fallback_given = dax_fallback->count() > 0;
    run_compose(*args);
  });
}

}  // namespace evmdk::cli
