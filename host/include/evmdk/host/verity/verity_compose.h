#pragma once
// The --verity off|auto|on policy applied to a compose: fills each layer's extra_options with
// its X-kata.dmverity.* options (host::verity_options_for_layer) and reports which layers are
// protected, so an unprotected layer is visible instead of silently mounted. See docs/verity.md.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verity/verity.h"

namespace evmdk::host {

struct LayerVerityStatus {
  std::string path;
  bool is_protected = false;
  std::string root_hash;  // when protected
  uint64_t hash_end = 0;  // when protected: the layer's extent must reach this byte
};

struct VerityPolicyReport {
  VerityPolicy policy = VerityPolicy::kAuto;
  std::vector<LayerVerityStatus> layers;  // in ComposeOptions::layers order
  std::vector<std::string> unprotected() const;
  nlohmann::json to_json() const;  // {"policy": "...", "layers": [{"path", "protected", ...}]}
};

// Appends every layer's dm-verity options to its LayerInput::extra_options under `policy`, in
// every mode: raw and gpt put the whole layer file, tree included, on the disk (hashoffset
// stays relative to the layer's start); flat mode (the fsmeta first, then its device blobs)
// moves each tree after the last device and rewrites hashoffset (compose does that). Throws
// evmdk::Error naming the layer: `on` with a layer that has no verity data, and a sidecar that
// is present but broken (any policy but off).
VerityPolicyReport apply_verity_policy(ComposeOptions& options, VerityPolicy policy);

}  // namespace evmdk::host
