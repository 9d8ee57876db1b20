#include "evmdk/host/compose/layout.h"

#include <algorithm>

#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxLayoutBytes = 64u << 20;

json identity_json(const FileIdentity& id) {
  return {{"device", id.device},
          {"inode", id.inode},
          {"size", id.size},
          {"head_sha256", id.head_sha256}};
}

}  // namespace

FileIdentity blob_identity(const InputFile& file, const std::string& name) {
  FileIdentity id;
  id.device = file.st.st_dev;
  id.inode = file.st.st_ino;
  id.size = static_cast<uint64_t>(file.st.st_size);
  std::string head(std::min<uint64_t>(id.size, 4096), '\0');
  head.resize(pread_full(file.fd.get(), head.data(), head.size(), 0, name));
  id.head_sha256 = to_hex(
      Sha256().update(fmt::format("erofs-vmdk blob head v1 {} ", id.size)).update(head).finish());
  return id;
}

json to_json(const Layout& layout) {
  json extents = json::array();
  for (const auto& e : layout.extents) {
    json j{{"role", e.role},
           {"first_lba", e.first_lba},
           {"last_lba", e.first_lba + e.sectors - 1},
           {"sectors", e.sectors},
           {"path", e.path},
           {"file_offset_sectors", e.file_offset_sectors}};
    if (e.layer_index) j["layer_index"] = *e.layer_index;
    extents.push_back(std::move(j));
  }
  json layers = json::array();
  for (const auto& l : layout.layers) {
    json j{{"index", l.index},         {"path", l.path},
           {"first_lba", l.first_lba}, {"last_lba", l.first_lba + l.sectors - 1},
           {"sectors", l.sectors},     {"file_size", l.file_size},
           {"erofs", l.erofs}};
    if (l.erofs) {
      j["erofs_uuid"] = l.erofs_uuid;
      j["fs_size"] = l.fs_size;
      j["block_size"] = l.block_size;
      j["volume_name"] = l.volume_name;
    }
    if (l.identity) j["identity"] = identity_json(*l.identity);
    if (!l.verity_root_hash.empty()) {
      j["verity"] = {{"roothash", l.verity_root_hash},
                     {"hash_offset", l.verity_hash_offset},
                     {"hash_disk_offset", l.verity_hash_disk_offset}};
    }
    if (l.partition) {
      j["partition"] = *l.partition;
      j["partition_first_lba"] = l.partition_first_lba;
      j["partition_last_lba"] = l.partition_last_lba;
      j["partuuid"] = l.partuuid;
      j["partition_name"] = l.partition_name;
    }
    layers.push_back(std::move(j));
  }
  json out;
  if (layout.entry_count) out["entry_count"] = *layout.entry_count;
  out["mode"] = layout.mode;
  out["disk"] = layout.disk;
  out["format"] = layout.format;
  out["serial"] = layout.serial;
  out["disk_sectors"] = layout.disk_sectors;
  if (!layout.disk_guid.empty()) out["disk_guid"] = layout.disk_guid;
  out["layers"] = std::move(layers);
  out["extents"] = std::move(extents);
  if (!layout.raw_image.is_null()) out["raw_image"] = layout.raw_image;
  if (!layout.attach.empty()) out["attach"] = layout.attach;
  return out;
}

Layout layout_from_json(const json& document, const std::string& name) {
  try {
    Layout layout;
    layout.mode = document.value("mode", "");
    layout.disk = document.value("disk", "");
    layout.format = document.value("format", "");
    layout.serial = document.value("serial", "");
    layout.disk_sectors = document.value("disk_sectors", uint64_t{0});
    layout.disk_guid = document.value("disk_guid", "");
    layout.attach = document.value("attach", "");
    if (document.contains("entry_count"))
      layout.entry_count = document.at("entry_count").get<uint32_t>();
    for (const auto& l : document.at("layers")) {
      LayoutLayer layer;
      layer.index = l.at("index").get<size_t>();
      layer.path = l.at("path").get<std::string>();
      layer.first_lba = l.at("first_lba").get<uint64_t>();
      layer.sectors = l.at("sectors").get<uint64_t>();
      layer.file_size = l.value("file_size", uint64_t{0});
      layer.erofs = l.value("erofs", true);
      layer.erofs_uuid = l.value("erofs_uuid", "");
      layer.fs_size = l.value("fs_size", uint64_t{0});
      layer.block_size = l.value("block_size", uint32_t{0});
      layer.volume_name = l.value("volume_name", "");
      if (l.contains("identity")) {
        const auto& id = l.at("identity");
        layer.identity =
            FileIdentity{id.at("device").get<uint64_t>(), id.at("inode").get<uint64_t>(),
                         id.at("size").get<uint64_t>(), id.at("head_sha256").get<std::string>()};
      }
      if (l.contains("partition")) layer.partition = l.at("partition").get<uint32_t>();
      layer.partition_first_lba = l.value("partition_first_lba", layer.first_lba);
      layer.partition_last_lba = l.value("partition_last_lba", layer.first_lba + layer.sectors - 1);
      layer.partuuid = l.value("partuuid", "");
      layer.partition_name = l.value("partition_name", "");
      if (l.contains("verity")) {
        const auto& v = l.at("verity");
        layer.verity_root_hash = v.at("roothash").get<std::string>();
        layer.verity_hash_offset = v.at("hash_offset").get<uint64_t>();
        layer.verity_hash_disk_offset = v.at("hash_disk_offset").get<uint64_t>();
      }
      layout.layers.push_back(std::move(layer));
    }
    if (document.contains("extents")) {
      for (const auto& e : document.at("extents")) {
        LayoutExtent extent;
        extent.role = e.value("role", "");
        extent.first_lba = e.at("first_lba").get<uint64_t>();
        extent.sectors = e.at("sectors").get<uint64_t>();
        extent.path = e.value("path", "");
        extent.file_offset_sectors = e.value("file_offset_sectors", uint64_t{0});
        if (e.contains("layer_index")) extent.layer_index = e.at("layer_index").get<size_t>();
        layout.extents.push_back(std::move(extent));
      }
    }
    if (document.contains("raw_image")) {
      layout.raw_image = document.at("raw_image");
      if (!layout.raw_image.is_object()) throw Error("{}: raw_image is not an object", name);
    }
    return layout;
  } catch (const json::exception& error) {
    throw Error("{} is not a valid layout.json: {}", name, error.what());
  }
}

Layout read_layout(const std::string& path) {
  std::string text = read_input_file(path, "layout", kMaxLayoutBytes);
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception& error) {
    throw Error("{} is not a valid layout.json: {}", path, error.what());
  }
  return layout_from_json(document, path);
}

}  // namespace evmdk::host
