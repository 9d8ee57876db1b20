#include "evmdk/host/verity/verity_compose.h"

#include "evmdk/error.h"
#include "evmdk/input_file.h"

namespace evmdk::host {

std::vector<std::string> VerityPolicyReport::unprotected() const {
  std::vector<std::string> out;
  for (const auto& layer : layers) {
    if (!layer.is_protected) out.push_back(layer.path);
  }
  return out;
}

nlohmann::json VerityPolicyReport::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& layer : layers) {
    nlohmann::json entry{{"path", layer.path}, {"protected", layer.is_protected}};
    if (layer.is_protected) {
      entry["roothash"] = layer.root_hash;
      entry["hash_end"] = layer.hash_end;
    }
    list.push_back(std::move(entry));
  }
  return {{"policy", std::string(to_string(policy))}, {"layers", std::move(list)}};
}

VerityPolicyReport apply_verity_policy(ComposeOptions& options, VerityPolicy policy) {
  VerityPolicyReport report;
  report.policy = policy;
  for (size_t i = 0; i < options.layers.size(); ++i) {
    auto& layer = options.layers[i];
    LayerVerityStatus status;
    status.path = layer.path;
    // The policy decides: options someone else put there (e.g. the hook) are replaced, never
    // duplicated (the guest refuses a repeated key).
    std::erase_if(layer.extra_options,
                  [](const std::string& option) { return is_dmverity_option(option); });
    // A missing, unreadable or special layer file is the first and only error, before any
    // word about its dm-verity data; the file opened here is the one inspected.
    InputFile file;
    try {
      file = open_input_file(layer.path, "file");
    } catch (const std::exception& error) {
      throw_with_context(error, fmt::format("layer {} ({})", i, layer.path));
    }
    layer.verity = verity_layer_under_policy(file, layer.path, policy,
                                             fmt::format("layer {} ({})", i, layer.path));
    if (layer.verity) {
      status.is_protected = true;
      status.root_hash = layer.verity->sidecar.root_hash;
      status.hash_end = layer.verity->hash_end;
    }
    report.layers.push_back(std::move(status));
  }
  return report;
}

}  // namespace evmdk::host
