// verify's documents: the report (--json), the expect file of --expect (JSON or sha256sum
// output) and the one --write-expect writes.
#include <sstream>

#include "evmdk/error.h"
#include "evmdk/host/verify/verify.h"

namespace evmdk::host {

std::string VerifiedLayer::name() const { return fmt::format("layer {} ({})", index, path); }

nlohmann::json VerifyReport::to_json() const {
  nlohmann::json layer_list = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json j{{"index", l.index},
                     {"path", l.path},
                     {"disk_offset", l.disk_offset},
                     {"length", l.length},
                     {"erofs_uuid", l.erofs_uuid},
                     {"ok", l.ok}};
    if (l.partition) {
      j["partition"] = *l.partition;
      j["partuuid"] = l.partuuid;
    }
    if (!l.sha256.empty()) j["sha256"] = l.sha256;
    if (!l.expected_sha256.empty()) j["expected_sha256"] = l.expected_sha256;
    if (!l.verity.empty()) j["verity"] = l.verity;
    layer_list.push_back(std::move(j));
  }
  return nlohmann::json{{"ok", ok()},
                        {"descriptor", descriptor},
                        {"image", image},
                        {"layout", layout},
                        {"mode", mode},
                        {"disk_bytes", disk_bytes},
                        {"bytes_read", stats.bytes},
                        {"direct_bytes", stats.direct_bytes},
                        {"seconds", seconds},
                        {"layers", layer_list},
                        {"problems", problems}};
}

std::vector<ExpectedDigest> parse_expected_digests(const std::string& text,
                                                   const std::string& name) {
  std::vector<ExpectedDigest> out;
  auto add = [&](const std::string& key, const std::string& hex) {
    auto digest = sha256_from_hex(hex);
    if (!digest)
      throw Error("verify: expect file {}: '{}' for {} is not a SHA-256 hex digest", name, hex,
                  key);
    out.push_back({key, *digest});
  };
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& error) {
      throw Error("verify: expect file {} is not valid JSON: {}", name, error.what());
    }
    const nlohmann::json& object = json.contains("layers") ? json.at("layers") : json;
    if (!object.is_object())
      throw Error("verify: expect file {}: expected an object of digests", name);
    for (const auto& [key, value] : object.items()) {
      if (!value.is_string())
        throw Error("verify: expect file {}: digest for {} is not a string", name, key);
      add(key, value.get<std::string>());
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    size_t number = 0;
    while (std::getline(lines, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      // sha256sum: 64 hex digits, a space, then ' ' (text) or '*' (binary), then the name.
      if (line.size() < 67 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
        throw Error("verify: expect file {} line {}: expected '<sha256>  <layer>' or JSON", name,
                    number);
      }
      add(line.substr(66), line.substr(0, 64));
    }
  }
  if (out.empty()) throw Error("verify: expect file {} lists no digests", name);
  return out;
}

std::string render_expected_digests(const VerifyReport& report) {
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& layer : report.layers) {
    if (!layer.sha256.empty()) layers[layer.path] = layer.sha256;
  }
  return nlohmann::json{{"algorithm", "sha256"}, {"layers", layers}}.dump(2) + "\n";
}

}  // namespace evmdk::host
