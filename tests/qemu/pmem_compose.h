#pragma once
// A composed disk ready for virtio-pmem, for the pmem scenarios: `erofs-vmdk compose --attach
// pmem`'s disk.img, storage.json and qemu.json "pmem" arguments, used as they are.
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
                                          const std::vector<std::string>& layers) {
  PmemComposedDisk disk;
  disk.dir = dir;
  if (!compose_has_attach_pmem()) throw HarnessError("erofs-vmdk compose has no --attach");
  // --allow-copy: the temp dir need not have reflinks (the raw image shares or copies).
  std::vector<std::string> args{"compose",    "--mode", mode, "--attach", "pmem",
                                "--allow-copy", "-o",     dir};
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
  // What the harness relies on: a 2 MiB multiple the file covers, and maxmem room for it.
  if (disk.device.size == 0 || disk.device.size % kPmemAlignment != 0 ||
      std::filesystem::file_size(disk.device.file) < disk.device.size ||
      pmem.at("maxmem_bytes").get<uint64_t>() < disk.device.size) {
    throw HarnessError("compose's qemu.json pmem entry does not fit its disk.img: " + pmem.dump());
  }
  return disk;
}

}  // namespace evmdk::qemu
