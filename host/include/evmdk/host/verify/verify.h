#pragma once
// `erofs-vmdk verify`: reads a composed disk through its descriptor's extent map (or its raw
// image, each layer's range compared with the layer file), exactly the bytes the guest will read,
// and checks every layer (EROFS superblock and checksum at the offset the guest finds it, UUIDs and
// PARTUUIDs against layout.json, the GPT head and tail, zero gaps, optional per-layer SHA-256
// against expected digests). See docs/verify.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/host/verify/verify_pipeline.h"
#include "evmdk/host/verify/verify_reader.h"

namespace evmdk::host {

struct VerifyOptions {
  // A compose output directory (disk.vmdk or disk.img + layout.json), or a descriptor or raw
  // image path (layout.json is taken from the same directory when present).
  std::string target;
  bool digest = false;                     // per-layer SHA-256 (implied by expect_path)
  std::optional<std::string> expect_path;  // expected digests; format in parse_expected_digests
  bool direct = false;   // O_DIRECT reads (cold-cache measurement, no cache churn)
  bool progress = true;  // progress bar on stderr when it is a terminal
  // For every layer layout.json marks as dm-verity protected: recompute its hash tree from the
  // data and compare the root with the one the guest gets and the tree with the stored one,
  // so a disk the guest's dm-verity would refuse (or fail reads on) is caught on the host.
  bool check_verity = false;
  // A descriptor with no layout.json beside it is refused (it alone would decide which files
  // are read as root); true reads the files it names anyway (--trust-descriptor).
  bool trust_descriptor = false;
  unsigned threads = 0;  // digest threads; 0 = one per core
  size_t chunk_size = 4u << 20;
  unsigned queue_depth = 8;
};

struct VerifiedLayer {
  size_t index = 0;                   // 0 = top layer (flat: 0 = fsmeta, i = device i)
  std::string path;                   // the layer file (from layout.json, else the extent's)
  uint64_t disk_offset = 0;           // bytes into the virtual disk
  uint64_t length = 0;                // bytes digested: the layer file as mapped
  std::optional<uint32_t> partition;  // gpt
  std::string partuuid;               // gpt, as found on the disk
  std::string erofs_uuid;             // as found on the disk
  std::string sha256;                 // hex, when digesting
  std::string expected_sha256;        // hex, when the expect file names this layer
  std::string verity;                 // check_verity: "verified", "failed"; empty: not protected
  bool ok = true;

  // "layer 1 (/path/layer.erofs)": how every message names it.
  std::string name() const;
};

struct VerifyReport {
  std::string descriptor;  // empty in raw mode and for a raw image
  std::string image;       // the raw image read (compose --format raw), else empty
  std::string layout;      // empty when there is none
  std::string mode;        // gpt, flat, raw
  uint64_t disk_bytes = 0;
  std::vector<VerifiedLayer> layers;
  std::vector<std::string> problems;  // each names the layer (or area) and the disk offset
  ReadStats stats;
  double seconds = 0;

  bool ok() const { return problems.empty(); }
  nlohmann::json to_json() const;
};

// Runs every check. Returns the report (problems listed, not thrown); throws evmdk::Error only
// when the disk cannot be examined at all (unreadable descriptor, bad layout.json, bad expect
// file, missing extent file).
VerifyReport verify_disk(const VerifyOptions& options);

// Expected digests. Two formats:
//  - JSON: {"<key>": "<sha256 hex>", ...} or {"layers": {...}} with the same object inside;
//  - `sha256sum` output: "<hex>  <key>" per line ("<hex> *<key>" too).
// A key is a layer index ("0" = top), a layer file path, or a file name unique on the disk.
struct ExpectedDigest {
  std::string key;
  Sha256Digest digest{};
};
std::vector<ExpectedDigest> parse_expected_digests(const std::string& text,
                                                   const std::string& name);

// The expect-file JSON for a report (every digested layer by path), for --write-expect.
std::string render_expected_digests(const VerifyReport& report);

}  // namespace evmdk::host
