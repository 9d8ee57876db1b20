#pragma once
// The guest's own integrity policy: rules the host cannot switch off because they come from
// the guest image (a file such as /etc/erofs-vmdk/policy.json) or the agent's command line,
// never from the storages. A storage list that does not meet it is refused before anything is
// mounted, naming the storage and the rule. The built-in default keeps the old behaviour
// (dm-verity optional) except that only sha256 and sha512 are accepted as verity hashes.
//
// policy.json: {"require_verity": true, "verity_algorithms": ["sha256"],
//               "root_hashes": ["<hex>", ...], "max_upper_bytes": 10737418240}
// Every key is optional; unknown keys are refused.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/guest/plan.h"

namespace evmdk::guest {

inline constexpr const char* kDefaultPolicyPath = "/etc/erofs-vmdk/policy.json";

struct Policy {
  // Every lower (and every extra device of a flat image) must be read through dm-verity; a
  // virtio-fs rootfs, which nothing verifies, is refused.
  bool require_verity = false;
  std::vector<std::string> verity_algorithms{"sha256", "sha512"};  // lower case
  std::vector<std::string> root_hashes;                // lower-case hex; empty = any root hash
  std::optional<uint64_t> max_upper_bytes;             // the upper disk's largest allowed size
  std::string origin = "the built-in default policy";  // for errors
};

// Strict: wrong types, unknown keys, md5/sha1 or malformed hashes are errors naming `origin`.
Policy policy_from_json(const nlohmann::json& json, const std::string& origin);
Policy load_policy(const std::string& path);
// The policy a mount runs under, the same for the CLI and the C API: the file at `path` when
// given, else kDefaultPolicyPath when the guest image has one, else the built-in default; then
// `overrides` (policy.json keys, e.g. from an agent's flags) on top. Overrides only tighten:
// require_verity is or-ed, each list narrows to what both allow (an error when nothing is
// left), max_upper_bytes takes the smaller.
Policy effective_policy(const std::string& path, const nlohmann::json& overrides);

// Refuses a plan that breaks `policy`, naming the storage and the rule.
void check_plan_policy(const Plan& plan, const Policy& policy);
// A dm-verity hash algorithm must be allowed: checked against the storage's option, and again
// (VerityDevice::activate) against what the tree's own superblock names.
void check_verity_algorithm(const Policy& policy, const std::string& algorithm,
                            const std::string& context);
// The upper disk's size must be within the limit.
void check_upper_size(const Policy& policy, uint64_t bytes, const std::string& context);
// A flat image's extra device without dm-verity, under require_verity.
void check_device_verity(const Policy& policy, bool has_verity, const std::string& context);

}  // namespace evmdk::guest
