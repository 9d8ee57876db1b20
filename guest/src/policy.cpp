#include "evmdk/guest/policy.h"

#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "evmdk/contract/markers.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"

namespace evmdk::guest {
namespace {

// A policy file is a few lines; anything larger is not one.
constexpr size_t kMaxPolicyBytes = 1 << 20;

std::string lower_case(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::vector<std::string> strings(const nlohmann::json& value, const char* key,
                                 const std::string& origin) {
  if (!value.is_array()) throw Error("{}: '{}' must be an array of strings", origin, key);
  std::vector<std::string> out;
  for (const auto& item : value) {
    if (!item.is_string()) throw Error("{}: '{}' must be an array of strings", origin, key);
    out.push_back(lower_case(item.get<std::string>()));
  }
  return out;
}

void check_root_hash(const Policy& policy, const VerityParams& params, const std::string& context) {
  if (policy.root_hashes.empty()) return;
  if (std::find(policy.root_hashes.begin(), policy.root_hashes.end(), params.root_hash) ==
      policy.root_hashes.end()) {
    throw Error("{}: dm-verity root hash {} is not in the allowed root hashes of {}", context,
                params.root_hash, policy.origin);
  }
}

void check_params(const Policy& policy, const VerityParams& params, const std::string& context) {
  if (params.algorithm) check_verity_algorithm(policy, *params.algorithm, context);
  check_root_hash(policy, params, context);
}

}  // namespace

Policy policy_from_json(const nlohmann::json& json, const std::string& origin) {
  if (!json.is_object()) throw Error("{}: a policy must be a JSON object", origin);
  Policy policy;
  policy.origin = origin;
  for (const auto& [key, value] : json.items()) {
    if (key == "require_verity") {
      if (!value.is_boolean()) throw Error("{}: 'require_verity' must be true or false", origin);
      policy.require_verity = value.get<bool>();
    } else if (key == "verity_algorithms") {
      policy.verity_algorithms = strings(value, "verity_algorithms", origin);
      if (policy.verity_algorithms.empty()) throw Error("{}: 'verity_algorithms' is empty", origin);
      for (const auto& algorithm : policy.verity_algorithms) {
        if (algorithm == "md5" || algorithm == "sha1") {
          throw Error("{}: verity algorithm '{}' is too weak to allow", origin, algorithm);
        }
      }
    } else if (key == "root_hashes") {
      policy.root_hashes = strings(value, "root_hashes", origin);
      for (const auto& hash : policy.root_hashes) {
        if (hash.empty() || !is_lower_hex(hash) || hash.size() % 2 != 0 || hash.size() > 256) {
          throw Error("{}: root hash '{}' is not an even-length hex string", origin, hash);
        }
      }
    } else if (key == "max_upper_bytes") {
      if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 0)) {
        throw Error("{}: 'max_upper_bytes' must be a non-negative integer", origin);
      }
      policy.max_upper_bytes = value.get<uint64_t>();
    } else {
      throw Error(
          "{}: unknown policy key '{}' (known: require_verity, verity_algorithms, "
          "root_hashes, max_upper_bytes)",
          origin, key);
    }
  }
  return policy;
}

Policy load_policy(const std::string& path) {
  std::string text = read_input_file(path, "policy", kMaxPolicyBytes);
  try {
    return policy_from_json(nlohmann::json::parse(text), "policy " + path);
  } catch (const nlohmann::json::exception& error) {
    throw_with_context(error, fmt::format("policy {}: not valid JSON", path));
  }
}

void check_verity_algorithm(const Policy& policy, const std::string& algorithm,
                            const std::string& context) {
  if (std::find(policy.verity_algorithms.begin(), policy.verity_algorithms.end(),
                lower_case(algorithm)) == policy.verity_algorithms.end()) {
    throw Error("{}: dm-verity hash algorithm '{}' is not allowed by {} (allowed: {})", context,
                algorithm, policy.origin, fmt::join(policy.verity_algorithms, ", "));
  }
}

void check_upper_size(const Policy& policy, uint64_t bytes, const std::string& context) {
  if (policy.max_upper_bytes && bytes > *policy.max_upper_bytes) {
    throw Error("{}: the upper disk is {} bytes, more than the {} allowed by {}", context, bytes,
                *policy.max_upper_bytes, policy.origin);
  }
}

void check_device_verity(const Policy& policy, bool has_verity, const std::string& context) {
  if (policy.require_verity && !has_verity) {
    throw Error(
        "{}: no dm-verity options, but {} requires dm-verity on every lower and every "
        "device of a flat image",
        context, policy.origin);
  }
}

void check_plan_policy(const Plan& plan, const Policy& policy) {
  if (policy.require_verity && plan.share != nullptr) {
    throw Error(
        "virtio-fs storage '{}': a shared host directory cannot be verified, and {} "
        "requires dm-verity",
        plan.share->source, policy.origin);
  }
  // A rootfs made only of the host's writable disk is as unverified as a shared directory.
  if (policy.require_verity && plan.share == nullptr && plan.lowers.empty()) {
    throw Error(
        "no lower (erofs) storage: the rootfs would be only the host's unverified upper "
        "disk, and {} requires dm-verity on every lower",
        policy.origin);
  }
  if (policy.require_verity && plan.kind == RootfsKind::Bind && plan.bind.mount_index == 0) {
    throw Error(
        "option {}={}: a rootfs bound from the upper disk is not verified, and {} "
        "requires dm-verity",
        marker::kRootfsBind, plan.bind_spec, policy.origin);
  }
  for (const auto& lower : plan.lowers) {
    std::string context =
        fmt::format("storage #{} '{}'", lower.storage_number, lower.storage->source);
    if (policy.require_verity && !lower.verity) {
      throw Error(
          "{}: no dm-verity options ({}=true with a root hash), but {} requires "
          "dm-verity on every lower",
          context, marker::kDmverityEnabled, policy.origin);
    }
    if (lower.verity) check_params(policy, *lower.verity, context);
    for (const auto& [slot, params] : lower.device_verity) {
      check_params(policy, params, fmt::format("{}, device {}", context, slot));
    }
  }
}

Policy effective_policy(const std::string& path, const nlohmann::json& overrides) {
  Policy policy;
  if (!path.empty()) {
    policy = load_policy(path);
  } else if (::access(kDefaultPolicyPath, F_OK) == 0) {
    policy = load_policy(kDefaultPolicyPath);
  }
  if (overrides.is_null() || (overrides.is_object() && overrides.empty())) return policy;
  Policy tighter = policy_from_json(overrides, "the policy overrides");
  policy.require_verity = policy.require_verity || tighter.require_verity;
  // Lists narrow: what both allow (an empty root-hash list in the file means any hash).
  auto narrow = [&](std::vector<std::string>& allowed, const std::vector<std::string>& asked,
                    bool empty_means_any, const char* what) {
    if (empty_means_any && allowed.empty()) {
      allowed = asked;
      return;
    }
    std::vector<std::string> both;
    for (const auto& item : asked) {
      if (std::find(allowed.begin(), allowed.end(), item) != allowed.end()) both.push_back(item);
    }
    if (both.empty()) {
      throw Error("the policy overrides allow no {} that {} allows", what, policy.origin);
    }
    allowed = both;
  };
  if (overrides.contains("verity_algorithms")) {
    narrow(policy.verity_algorithms, tighter.verity_algorithms, false, "dm-verity hash algorithm");
  }
  if (overrides.contains("root_hashes")) {
    narrow(policy.root_hashes, tighter.root_hashes, true, "root hash");
  }
  if (tighter.max_upper_bytes &&
      (!policy.max_upper_bytes || *tighter.max_upper_bytes < *policy.max_upper_bytes)) {
    policy.max_upper_bytes = tighter.max_upper_bytes;
  }
  policy.origin = fmt::format("{} with overrides", path.empty() ? policy.origin : "policy " + path);
  return policy;
}

}  // namespace evmdk::guest
