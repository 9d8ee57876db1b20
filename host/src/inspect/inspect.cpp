// inspect: a layer, a composed output (VMDK or raw), or a raw GPT disk, as JSON (inspect.h).
#include "evmdk/host/inspect/inspect.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/host/erofs/dax_coverage.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/host/verity/verity_compose.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kSector = 512;

bool starts_with(const InputFile& file, const std::string& path, uint64_t offset,
                 std::string_view prefix) {
  std::string head(prefix.size(), '\0');
  return pread_full(file.fd.get(), head.data(), head.size(), offset, path) == prefix.size() &&
         head == prefix;
}

// The DAX coverage as JSON, or the reason the walk refused the image.
nlohmann::json dax_json(int fd, uint64_t base, uint64_t size, const std::string& name) {
  try {
    return to_json(dax_coverage(fd, base, size, name));
  } catch (const std::exception& error) {
    return {{"error", error.what()}};
  }
}

nlohmann::json dax_of_file(const std::string& path) {
  try {
    InputFile file = open_input_file(path, "layer");
    return dax_json(file.fd.get(), 0, static_cast<uint64_t>(file.st.st_size), path);
  } catch (const std::exception& error) {
    return {{"error", error.what()}};
  }
}

nlohmann::json inspect_layer(const std::string& path) {
  ErofsInfo info = probe_layer(path);
  // The layer's dm-verity data as compose would use it; a broken sidecar is shown, not fatal
  // (inspect is where one looks to find out why compose refused it).
  nlohmann::json verity{{"sidecar", verity_sidecar_path(path)}};
  try {
    if (auto v = inspect_verity_layer(path)) {
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
  nlohmann::json out = to_json(info);
  out["verity"] = verity;
  out["dax"] = dax_of_file(path);
  return out;
}

nlohmann::json inspect_gpt_disk(const std::string& path) {
  InputFile file = open_input_file(path, "disk image");
  const UniqueFd& fd = file.fd;
  gpt::Table table = gpt::read_table(fd.get(), path);
  const uint64_t image_size = static_cast<uint64_t>(file.st.st_size);
  nlohmann::json partitions = nlohmann::json::array();
  std::vector<PmemRegion> regions;
  for (size_t i = 0; i < table.partitions.size(); ++i) {
    const auto& p = table.partitions[i];
    const uint32_t number = table.partition_number(i);
    std::string name = fmt::format("{} partition {}", path, number);
    nlohmann::json entry{{"number", number},
                         {"first_lba", p.first_lba},
                         {"last_lba", p.last_lba},
                         {"partuuid", gpt::format_guid(p.unique)},
                         {"name", p.name}};
    const uint64_t offset = p.first_lba * kSector;
    const uint64_t length = (p.last_lba - p.first_lba + 1) * kSector;
    entry["erofs"] = to_json(probe_image_at(fd.get(), offset, length, name));
    entry["dax"] = dax_json(fd.get(), offset, length, name);
    regions.push_back({fmt::format("partition {}", number), offset, length});
    partitions.push_back(std::move(entry));
  }
  const bool backup_at_end = image_size == table.total_sectors * kSector;
  return {{"path", path},
          {"type", "gpt"},
          {"disk_guid", gpt::format_guid(table.disk_guid)},
          {"total_sectors", table.total_sectors},
          {"entry_count", table.entry_count},
          {"partitions", partitions},
          {"pmem", pmem_readiness(image_size, true, backup_at_end, regions)}};
}

// Per layer of a raw composed image: where its bytes (every extent of the layer: data,
// blobs, verity area) sit in disk.img, shared by reflink or not, and what compose copied.
nlohmann::json layer_sharing(int image_fd, const std::string& image, const Layout& layout,
                             size_t index) {
  uint64_t bytes = 0, copied = 0;
  ExtentSharing total;
  try {
    for (const auto& e : layout.extents) {
      if (e.layer_index != index) continue;
      const uint64_t offset = e.first_lba * kSector, length = e.sectors * kSector;
      bytes += length;
      ExtentSharing s = fiemap_sharing(image_fd, offset, length, image);
      total.shared_bytes += s.shared_bytes;
      total.unshared_bytes += s.unshared_bytes;
      total.hole_bytes += s.hole_bytes;
      if (layout.raw_image.is_object() && layout.raw_image.contains("pieces")) {
        for (const auto& piece : layout.raw_image["pieces"]) {
          const uint64_t at = piece.value("disk_offset", uint64_t{0});
          if (at >= offset && at < offset + length)
            copied += piece.value("copied_bytes", uint64_t{0});
        }
      }
    }
  } catch (const std::exception& error) {
    return {{"error", error.what()}};
  }
  return {{"bytes", bytes},
          {"shared_bytes", total.shared_bytes},
          {"unshared_bytes", total.unshared_bytes},
          {"hole_bytes", total.hole_bytes},
          {"copied_bytes", copied}};
}

// A composed output: `layout_path` (layout.json) names every layer; `raw_image` is the open
// disk.img for a raw output.
nlohmann::json inspect_composed(const std::string& path, const std::string& layout_path,
                                const InputFile* raw_image) {
  Layout layout = read_layout(layout_path);
  nlohmann::json layers = nlohmann::json::array();
  nlohmann::json written = to_json(layout)["layers"];
  std::vector<PmemRegion> regions;
  for (size_t i = 0; i < layout.layers.size(); ++i) {
    const LayoutLayer& layer = layout.layers[i];
    nlohmann::json entry = written[i];
    if (layer.erofs) entry["probe"] = to_json(probe_layer(layer.path));
    // The bytes the guest reads: disk.img's copy of the layer for a raw output.
    const LayoutExtent* data = nullptr;
    for (const auto& e : layout.extents) {
      if (e.layer_index == i && e.role != "verity" && !data) data = &e;
    }
    if (layer.erofs) {
      if (raw_image && data) {
        entry["dax"] = dax_json(raw_image->fd.get(), data->first_lba * kSector, layer.file_size,
                                fmt::format("{} layer {} ({})", path, i, layer.path));
      } else {
        entry["dax"] = dax_of_file(layer.path);
      }
    }
    if (raw_image) {
      entry["sharing"] = layer_sharing(raw_image->fd.get(), path, layout, i);
      if (layout.mode == "gpt" && layer.partition) {
        regions.push_back({fmt::format("partition {} ({})", *layer.partition, layer.path),
                           layer.partition_first_lba * kSector,
                           (layer.partition_last_lba - layer.partition_first_lba + 1) * kSector});
      } else if (data) {
        regions.push_back({fmt::format("{} {} ({})",
                                       data->role == "layer"    ? "layer"
                                       : data->role == "fsmeta" ? "fsmeta"
                                                                : "blob",
                                       i, layer.path),
                           data->first_lba * kSector, data->sectors * kSector});
      }
    }
    layers.push_back(std::move(entry));
  }
  nlohmann::json out{{"path", path},
                     {"type", "composed"},
                     {"mode", layout.mode},
                     {"serial", layout.serial},
                     {"format", layout.format.empty() ? "vmdk" : layout.format},
                     {"layers", layers}};
  if (raw_image) {
    const uint64_t size = static_cast<uint64_t>(raw_image->st.st_size);
    bool backup_at_end = true;
    if (layout.mode == "gpt") {
      try {
        gpt::Table table = gpt::read_table(raw_image->fd.get(), path);
        backup_at_end = size == table.total_sectors * kSector;
      } catch (const std::exception&) {
        backup_at_end = false;
      }
    }
    out["pmem"] = pmem_readiness(size, layout.mode == "gpt", backup_at_end, regions);
    if (layout.raw_image.is_object()) {
      out["raw_image"] = {{"filesystem", layout.raw_image.value("filesystem", "")},
                          {"shared_bytes", layout.raw_image.value("shared_bytes", uint64_t{0})},
                          {"copied_bytes", layout.raw_image.value("copied_bytes", uint64_t{0})},
                          {"hole_bytes", layout.raw_image.value("hole_bytes", uint64_t{0})}};
    }
  }
  return out;
}

bool same_file(const struct stat& st, const std::string& other) {
  struct stat o {};
  return ::stat(other.c_str(), &o) == 0 && o.st_dev == st.st_dev && o.st_ino == st.st_ino;
}

// The raw image of a raw output: the file layout.json names, looked up beside layout.json (the
// directory may have moved since compose; verify does the same).
std::string raw_image_path(const fs::path& dir, const Layout& layout) {
  std::string name = fs::path(layout.disk).filename().string();
  return (dir / (name.empty() ? std::string(kRawImageName) : name)).string();
}

}  // namespace

nlohmann::json inspect(const std::string& path) {
  const fs::path dir = fs::path(path).parent_path();
  const std::string layout_path = (dir / kLayoutName).string();
  // DIR/disk.vmdk of a raw output (there is none): the user means the output, DIR/disk.img.
  std::error_code ec;
  if (!fs::exists(path, ec) && fs::path(path).filename() == kDescriptorName &&
      fs::exists(layout_path, ec)) {
    Layout layout = read_layout(layout_path);
    if (layout.format == "raw") {
      std::string image = raw_image_path(dir, layout);
      InputFile file = open_input_file(image, "raw disk image");
      return inspect_composed(image, layout_path, &file);
    }
  }
  InputFile file = open_input_file(path, "file");
  if (starts_with(file, path, 0, "# Disk DescriptorFile")) {
    if (!fs::exists(layout_path, ec)) {
      throw Error(
          "{}: a VMDK descriptor without {} beside it; inspect the layers, or the raw "
          "image (qemu-img convert -O raw)",
          path, kLayoutName);
    }
    return inspect_composed(path, layout_path, nullptr);
  }
  // A composed raw output: layout.json beside it names this very file as its raw disk.
  if (fs::exists(layout_path, ec)) {
    try {
      Layout layout = read_layout(layout_path);
      if (layout.format == "raw" && same_file(file.st, raw_image_path(dir, layout))) {
        return inspect_composed(path, layout_path, &file);
      }
    } catch (const std::exception&) {
      // Not a layout of ours: inspect the file by itself.
    }
  }
  // An EROFS image has its magic at byte 1024; a raw GPT disk has its header at LBA 1.
  if (starts_with(file, path, 512, "EFI PART")) return inspect_gpt_disk(path);
  return inspect_layer(path);
}

}  // namespace evmdk::host
