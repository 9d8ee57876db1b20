#pragma once
// A composed disk ready for virtio-pmem, for the pmem scenarios: `erofs-vmdk compose --attach
// pmem` when the built tool has it (its disk.img, storage.json and qemu.json "pmem" arguments
// used as they are), else the harness path of phase A (compose's VMDK through qemu-img, padded
// to 2 MiB, backup GPT moved with sgdisk; the storages turned into DAX pmem storages here).
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "harness/pmem_disk.h"
#include "scenario.h"

namespace evmdk::qemu {

struct PmemComposedDisk {
  std::string dir;
  PmemDevice device;        // attach as it is
  nlohmann::json storages;  // storage.json: the lowers, driver nvdimm, DAX asked for
  bool by_compose = false;  // compose --attach pmem wrote it (not the harness path)
};

inline bool compose_has_attach_pmem() {
  auto help = test::cli({"compose", "--help"});
  return help.exit_code == 0 && help.out.find("--attach") != std::string::npos;
}

// The storages with dax-fallback=`fallback` instead of what they say.
inline nlohmann::json with_dax_fallback(nlohmann::json storages, const std::string& fallback) {
  for (auto& storage : storages) {
    for (auto& option : storage["options"]) {
      if (option.get<std::string>().rfind("X-erofs-vmdk.dax-fallback=", 0) == 0) {
        option = "X-erofs-vmdk.dax-fallback=" + fallback;
      }
    }
  }
  return storages;
}

// mode "gpt" or "flat"; layers top first (flat: the fsmeta, then its blobs).
inline PmemComposedDisk compose_pmem_disk(const std::string& dir, const std::string& mode,
                                          const std::vector<std::string>& layers,
                                          const std::string& scratch) {
  PmemComposedDisk disk;
  disk.dir = dir;
  if (compose_has_attach_pmem()) {
    std::vector<std::string> args{"compose", "--mode", mode, "--attach", "pmem", "-o", dir};
    args.insert(args.end(), layers.begin(), layers.end());
    auto composed = test::cli(args);
    if (composed.exit_code != 0) {
      throw HarnessError("erofs-vmdk compose --attach pmem failed: " + composed.out + composed.err);
    }
    auto qemu = nlohmann::json::parse(test::read_file(dir + "/qemu.json"));
    const auto& pmem = qemu.at("pmem");
    disk.device.file = dir + "/disk.img";
    disk.device.size = pmem.at("size").get<uint64_t>();
    for (const auto& arg : pmem.at("args")) disk.device.args.push_back(arg.get<std::string>());
    disk.storages = nlohmann::json::parse(test::read_file(dir + "/storage.json"));
    disk.by_compose = true;
    return disk;
  }
  ComposedDisk composed =
      compose_disk(dir, mode == "flat" ? host::ComposeMode::Flat : host::ComposeMode::Gpt, layers);
  auto raw = make_pmem_raw_disk(dir + "/disk.vmdk", dir + "/disk.img", scratch, mode != "flat");
  disk.device.file = raw.image;
  disk.storages = composed.storages;
  for (auto& storage : disk.storages) {
    storage["driver"] = "nvdimm";
    storage["source"] = "pmem-scan";
    storage["options"].push_back("X-erofs-vmdk.dax=always");
    storage["options"].push_back("X-erofs-vmdk.dax-fallback=error");
  }
  return disk;
}

}  // namespace evmdk::qemu
