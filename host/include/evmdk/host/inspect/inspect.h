#pragma once
// `erofs-vmdk inspect`: what a file is and what it holds, as JSON (the command prints it, or a
// text form of it). docs/inspect.md describes the output.
//
//   an EROFS layer      {"type": "erofs", ...probe..., "verity": {...}, "dax": {...}}
//   a composed output   {"type": "composed", "format": "vmdk"|"raw", "mode", "serial",
//                        "layers": [{...layout..., "probe", "dax"[, "sharing"]}][, "pmem"]}
//                       (disk.vmdk with layout.json beside it, or DIR/disk.img when layout.json
//                        says format raw; DIR/disk.vmdk of a raw output is taken as DIR/disk.img)
//   a raw GPT disk      {"type": "gpt", "disk_guid", "total_sectors", "entry_count",
//                        "partitions": [{..., "erofs", "dax"}], "pmem"}
//
// "dax" is to_json(DaxCoverage) (host/erofs/dax_coverage.h), or {"error": "..."} when the walk
// refused the layer (a broken layer is shown, not fatal: inspect is where one looks).
// "pmem" is the pmem readiness of a raw image (pmem_readiness below).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace evmdk::host {

// Inspects `path`. Throws evmdk::Error naming the file for what is none of the above.
nlohmann::json inspect(const std::string& path);

// How much of [start, start + length) of `fd` is stored in extents FIEMAP marks SHARED, in
// extents it does not, and in holes (no extent). Throws evmdk::Error naming `name` when the
// filesystem has no FIEMAP.
struct ExtentSharing {
  uint64_t shared_bytes = 0;
  uint64_t unshared_bytes = 0;
  uint64_t hole_bytes = 0;
};
ExtentSharing fiemap_sharing(int fd, uint64_t start, uint64_t length, const std::string& name);

// Whether a raw image can be a virtio-pmem device mounted with DAX: size a multiple of 2 MiB,
// the backup GPT in the last sector (gpt), every partition or blob starting and ending on
// 4 KiB. {"ready": bool, "size": N, "problems": ["..."]}.
struct PmemRegion {
  std::string name;  // "partition 2", "blob 1 (/x/b.blob)"
  uint64_t offset = 0;
  uint64_t length = 0;
};
nlohmann::json pmem_readiness(uint64_t image_size, bool gpt, bool backup_at_end,
                              const std::vector<PmemRegion>& regions);

}  // namespace evmdk::host
