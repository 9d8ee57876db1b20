// libFuzzer target for the guest's storage list -> plan step (the host is not trusted): any
// JSON through storages_from_json, make_plan and the policy checks. Whatever is accepted must
// keep the trust rules: layer mounts nodev,nosuid (lowers ro), overlay options only from the
// allowlist and never naming a path, lower indexes 0..n-1. Errors (evmdk::Error) are fine;
// crashes, sanitizer reports or a broken rule (abort) are bugs.
#include <sys/mount.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "fuzz_support.h"
#include "evmdk/guest/plan.h"
#include "evmdk/guest/policy.h"
#include "evmdk/storage_spec.h"

namespace {

using namespace evmdk;
using namespace evmdk::guest;

using fuzz::check;

bool names_a_path(const std::string& data) {
  return data.find('/') != std::string::npos || data.find("device=") != std::string::npos ||
         data.find("dir") != std::string::npos;
}

void check_plan(const Plan& plan) {
  for (size_t i = 0; i < plan.lowers.size(); ++i) {
    const LowerPlan& lower = plan.lowers[i];
    check(lower.index == i, "lower indexes are 0..n-1 in order");
    check((lower.mount.flags & (MS_RDONLY | MS_NODEV | MS_NOSUID)) == (MS_RDONLY | MS_NODEV | MS_NOSUID),
          "lower mounts are ro,nodev,nosuid");
    check(!names_a_path(lower.mount.data), "lower mount data names no path or device");
    check(lower.storage != nullptr && lower.storage->fstype == "erofs", "lowers are erofs");
  }
  if (plan.upper != nullptr) {
    check((plan.upper_mount.flags & (MS_NODEV | MS_NOSUID)) == (MS_NODEV | MS_NOSUID), "upper is nodev,nosuid");
    check(plan.upper->fstype.empty() || plan.upper->fstype == "ext4", "the upper is ext4");
    check(!names_a_path(plan.upper_mount.data), "upper mount data names no path or device");
  }
  for (const auto& option : plan.overlay_options) {
    check(option.find(',') == std::string::npos, "an overlay option is one option");
    check(option.rfind("lowerdir", 0) != 0 && option.rfind("upperdir", 0) != 0 &&
              option.rfind("workdir", 0) != 0 && option.rfind("datadir", 0) != 0,
          "no overlay option names a directory");
    try {
      check_overlay_option(option, "fuzz");
    } catch (const Error&) {
      check(false, "every planned overlay option is allowlisted");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json json = nlohmann::json::parse(data, data + size, nullptr, false);
  if (json.is_discarded()) return 0;
  std::vector<Storage> storages;
  try {
    storages = storages_from_json(json);
  } catch (const Error&) {
    return 0;
  }
  try {
    Plan plan = make_plan(storages);
    check_plan(plan);
    Policy strict;
    strict.require_verity = true;
    for (const Policy* policy : {static_cast<const Policy*>(&strict), static_cast<const Policy*>(nullptr)}) {
      try {
        check_plan_policy(plan, policy ? *policy : Policy{});
        if (policy) {
          for (const auto& lower : plan.lowers) check(lower.verity.has_value(), "require_verity passed only verified lowers");
          check(plan.share == nullptr, "require_verity refuses a virtio-fs rootfs");
        }
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
