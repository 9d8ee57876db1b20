// The C API (capi/include/evmdk/evmdk.h) over the public C++ APIs: each call parses one JSON
// request, runs the library function the command runs, and returns the command's document.
// Every exception is caught here and becomes a status code plus a message.
#include "evmdk/evmdk.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "documents.h"
#include "evmdk/error.h"
#include "evmdk/guest/driver.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/hook/hook.h"
#include "evmdk/host/verify/verify.h"
#include "evmdk/host/verity/verity_compose.h"
#include "evmdk/storage_spec.h"

namespace {

using nlohmann::json;

// A request the call cannot use; reported as EVMDK_ERR_INVALID.
class InvalidRequest : public evmdk::Error {
 public:
  using evmdk::Error::Error;
};

// One request document: typed getters that name the key at fault, and a final check that
// the caller sent no key the call does not know.
class Request {
 public:
  Request(const char* text, const char* call) : call_(call) {
    if (text == nullptr) throw InvalidRequest("{}: the request is NULL", call_);
    try {
      json_ = json::parse(text);
    } catch (const json::exception& error) {
      throw InvalidRequest("{}: the request is not valid JSON: {}", call_, error.what());
    }
    if (!json_.is_object()) throw InvalidRequest("{}: the request must be a JSON object", call_);
  }

  const json* find(const char* key) {
    known_.insert(key);
    auto it = json_.find(key);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }

  const json& require(const char* key) {
    const json* value = find(key);
    if (value == nullptr) throw InvalidRequest("{}: request key \"{}\" is required", call_, key);
    return *value;
  }

  std::string string(const char* key, std::string fallback = {}) {
    const json* value = find(key);
    return value ? as_string(key, *value) : fallback;
  }

  std::string required_string(const char* key) {
    std::string value = as_string(key, require(key));
    if (value.empty()) throw InvalidRequest("{}: request key \"{}\" is empty", call_, key);
    return value;
  }

  bool boolean(const char* key, bool fallback) {
    const json* value = find(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) throw bad_type(key, "true or false");
    return value->get<bool>();
  }

  template <typename T>
  T number(const char* key, T fallback) {
    const json* value = find(key);
    if (value == nullptr) return fallback;
    if (!value->is_number_unsigned() ||
        value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      throw bad_type(key, fmt::format("a whole number from 0 to {}", std::numeric_limits<T>::max()));
    }
    return static_cast<T>(value->get<uint64_t>());
  }

  std::vector<std::string> strings(const char* key) {
    const json* value = find(key);
    if (value == nullptr) return {};
    if (!value->is_array()) throw bad_type(key, "an array of strings");
    std::vector<std::string> out;
    for (const auto& item : *value) {
      if (!item.is_string()) throw bad_type(key, "an array of strings");
      out.push_back(item.get<std::string>());
    }
    return out;
  }

  // Runs `parse` on a key's value; any error it throws becomes InvalidRequest naming the key.
  template <typename Parse>
  auto parsed(const char* key, const Parse& parse) {
    try {
      return parse();
    } catch (const std::exception& error) {
      throw InvalidRequest("{}: request key \"{}\": {}", call_, key, error.what());
    }
  }

  // After every getter: a key nobody asked for is a typo or a feature this version lacks.
  void finish() const {
    std::vector<std::string> unknown;
    for (const auto& item : json_.items()) {
      if (!known_.contains(item.key())) unknown.push_back(item.key());
    }
    if (!unknown.empty()) {
      throw InvalidRequest("{}: unknown request key(s) {} (known: {})", call_,
                           fmt::join(unknown, ", "), fmt::join(known_, ", "));
    }
  }

  const char* call() const { return call_; }

 private:
  std::string as_string(const char* key, const json& value) const {
    if (!value.is_string()) throw bad_type(key, "a string");
    return value.get<std::string>();
  }
  InvalidRequest bad_type(const char* key, const std::string& expected) const {
    return InvalidRequest("{}: request key \"{}\" must be {}", call_, key, expected);
  }

  const char* call_;
  json json_;
  std::set<std::string> known_;
};

struct Outcome {
  int status = EVMDK_OK;
  json result;          // null: no document
  std::string message;  // empty when EVMDK_OK
};

Outcome incomplete(json result, const std::string& what, const std::vector<std::string>& items) {
  return {EVMDK_ERR_INCOMPLETE, std::move(result), fmt::format("{}: {}", what, fmt::join(items, "; "))};
}

char* copy_out(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out == nullptr) throw std::bad_alloc();
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// The one place exceptions stop: every entry point runs its body through here.
template <typename Body>
int run(const char* call, const char* request_text, char** result_json, char** error_message,
        const Body& body) noexcept {
  if (result_json) *result_json = nullptr;
  if (error_message) *error_message = nullptr;
  Outcome outcome;
  try {
    Request request(request_text, call);
    outcome = body(request);
  } catch (const InvalidRequest& error) {
    outcome = {EVMDK_ERR_INVALID, nullptr, error.what()};
  } catch (const evmdk::SystemError& error) {
    outcome = {EVMDK_ERR_SYSTEM, nullptr, fmt::format("{}: {}", call, error.what())};
  } catch (const std::bad_alloc&) {
    outcome = {EVMDK_ERR_NOMEM, nullptr, fmt::format("{}: out of memory", call)};
  } catch (const std::system_error& error) {  // includes std::filesystem::filesystem_error
    outcome = {EVMDK_ERR_SYSTEM, nullptr, fmt::format("{}: {}", call, error.what())};
  } catch (const std::exception& error) {  // evmdk::Error and what the libraries let through
    outcome = {EVMDK_ERR_FAILED, nullptr, fmt::format("{}: {}", call, error.what())};
  } catch (...) {
    outcome = {EVMDK_ERR_INTERNAL, nullptr, fmt::format("{}: unknown exception", call)};
  }
  char* result = nullptr;
  char* message = nullptr;
  try {
    if (result_json && !outcome.result.is_null()) {
      // Paths need not be UTF-8; never let that turn a result into an error.
      result = copy_out(outcome.result.dump(2, ' ', false, json::error_handler_t::replace));
    }
    if (error_message && !outcome.message.empty()) message = copy_out(outcome.message);
  } catch (...) {
    std::free(result);
    return EVMDK_ERR_NOMEM;  // the message could not be allocated either
  }
  if (result_json) *result_json = result;
  if (error_message) *error_message = message;
  return outcome.status;
}

Outcome guest_mount(Request& request) {
  evmdk::guest::MountRequest mount;
  const json& storages = request.require("storages");
  mount.storages = request.parsed("storages", [&] { return evmdk::storages_from_json(storages); });
  mount.container_id = request.required_string("id");
  mount.rootfs = request.required_string("rootfs");
  mount.base_dir = request.string("base", evmdk::guest::kDefaultBaseDir);
  mount.device_timeout = std::chrono::milliseconds(request.number<uint32_t>("timeout_ms", 10000));
  mount.parallel_mounts = request.number<unsigned>("parallel", 4);
  // The guest's integrity policy, as for the CLI: the file (or /etc/erofs-vmdk/policy.json
  // when present), tightened by the same keys as the command-line flags.
  std::string policy_path = request.string("policy");
  json overrides = json::object();
  if (request.boolean("require_verity", false)) overrides["require_verity"] = true;
  if (auto hashes = request.strings("verity_algorithm"); !hashes.empty()) overrides["verity_algorithms"] = hashes;
  if (auto roots = request.strings("root_hash"); !roots.empty()) overrides["root_hashes"] = roots;
  if (request.find("max_upper_bytes")) overrides["max_upper_bytes"] = request.number<uint64_t>("max_upper_bytes", 0);
  request.finish();
  mount.policy = request.parsed("policy", [&] { return evmdk::guest::effective_policy(policy_path, overrides); });
  return {EVMDK_OK, evmdk::documents::mount_result(evmdk::guest::mount_rootfs(mount)), {}};
}

Outcome guest_teardown(Request& request) {
  evmdk::guest::TeardownRequest teardown;
  teardown.container_id = request.required_string("id");
  teardown.rootfs = request.string("rootfs");
  teardown.base_dir = request.string("base", evmdk::guest::kDefaultBaseDir);
  teardown.cgroups = request.strings("cgroups");
  auto kill_timeout = std::chrono::milliseconds(request.number<uint32_t>("kill_timeout_ms", 5000));
  teardown.kill_timeout = kill_timeout;
  teardown.cgroup_remove_timeout = kill_timeout;
  request.finish();
  auto report = evmdk::guest::teardown_rootfs(teardown);
  if (!report.clean()) {
    return incomplete(report.to_json(), fmt::format("{}: not cleaned", request.call()),
                      report.problems);
  }
  return {EVMDK_OK, report.to_json(), {}};
}

Outcome guest_status(Request& request) {
  std::string id = request.required_string("id");
  std::string base = request.string("base", evmdk::guest::kDefaultBaseDir);
  request.finish();
  return {EVMDK_OK, evmdk::guest::rootfs_status(base, id), {}};
}

Outcome compose(Request& request) {
  namespace host = evmdk::host;
  host::ComposeOptions options;
  for (const auto& layer : request.strings("layers")) options.layers.push_back({layer, {}});
  if (options.layers.empty()) {
    throw InvalidRequest("{}: request key \"layers\" must name at least one layer", request.call());
  }
  options.output_dir = request.required_string("output");
  std::string mode = request.string("mode", "auto");
  options.mode = request.parsed("mode", [&] { return host::parse_compose_mode(mode); });
  std::string order = request.string("order", "top-first");
  options.order = request.parsed("order", [&] { return host::parse_layer_order(order); });
  options.fdset = request.boolean("fdset", false);
  options.first_fdset_id = request.number<uint32_t>("first_fdset", 1);
  options.serial = request.string("serial");
  std::string verity = request.string("verity", "auto");
  auto policy = request.parsed("verity", [&] { return host::parse_verity_policy(verity); });
  request.finish();
  host::apply_verity_policy(options, policy);
  return {EVMDK_OK, host::to_json(host::compose(options).layout), {}};
}

Outcome hook(Request& request) {
  namespace host = evmdk::host;
  host::HookRequest hook;
  hook.id = request.required_string("id");
  hook.state_dir = request.required_string("state_dir");
  const json& mounts = request.require("mounts");
  hook.mounts = request.parsed("mounts", [&] { return host::parse_mount_list(mounts); });
  std::string verity = request.string("verity", "auto");
  hook.verity = request.parsed("verity", [&] { return host::parse_verity_policy(verity); });
  request.finish();
  return {EVMDK_OK, host::run_hook(hook), {}};
}

Outcome hook_cleanup(Request& request) {
  std::string id = request.required_string("id");
  std::string state_dir = request.required_string("state_dir");
  request.finish();
  auto report = evmdk::host::cleanup_hook(id, state_dir);
  json document = evmdk::documents::cleanup_report(id, report);
  if (!report.left.empty()) {
    return incomplete(std::move(document), fmt::format("{}: not removed", request.call()),
                      report.left);
  }
  return {EVMDK_OK, std::move(document), {}};
}

Outcome verify(Request& request) {
  evmdk::host::VerifyOptions options;
  options.target = request.required_string("target");
  options.digest = request.boolean("digest", false);
  std::string expect = request.string("expect");
  if (!expect.empty()) options.expect_path = expect;
  options.check_verity = request.boolean("verity", false);
  options.direct = request.boolean("direct", false);
  options.threads = request.number<unsigned>("threads", 0);
  options.chunk_size = request.number<size_t>("chunk_size", options.chunk_size);
  options.queue_depth = request.number<unsigned>("queue_depth", options.queue_depth);
  options.progress = false;  // a library never draws on the caller's terminal
  request.finish();
  auto report = evmdk::host::verify_disk(options);
  if (!report.ok()) {
    return incomplete(report.to_json(), fmt::format("{}: failed", request.call()),
                      report.problems);
  }
  return {EVMDK_OK, report.to_json(), {}};
}

}  // namespace

extern "C" {

const char* evmdk_version(void) { return EVMDK_VERSION_STRING; }

int evmdk_api_version(void) { return EVMDK_API_VERSION; }

void evmdk_free(char* string) { std::free(string); }

const char* evmdk_status_name(int status) {
  switch (status) {
    case EVMDK_OK: return "EVMDK_OK";
    case EVMDK_ERR_INVALID: return "EVMDK_ERR_INVALID";
    case EVMDK_ERR_FAILED: return "EVMDK_ERR_FAILED";
    case EVMDK_ERR_SYSTEM: return "EVMDK_ERR_SYSTEM";
    case EVMDK_ERR_INCOMPLETE: return "EVMDK_ERR_INCOMPLETE";
    case EVMDK_ERR_NOMEM: return "EVMDK_ERR_NOMEM";
    case EVMDK_ERR_INTERNAL: return "EVMDK_ERR_INTERNAL";
    default: return "EVMDK_ERR_UNKNOWN";
  }
}

int evmdk_guest_mount(const char* request, char** result, char** message) {
  return run("guest mount", request, result, message, guest_mount);
}

int evmdk_guest_teardown(const char* request, char** result, char** message) {
  return run("guest teardown", request, result, message, guest_teardown);
}

int evmdk_guest_status(const char* request, char** result, char** message) {
  return run("guest status", request, result, message, guest_status);
}

int evmdk_compose(const char* request, char** result, char** message) {
  return run("compose", request, result, message, compose);
}

int evmdk_hook(const char* request, char** result, char** message) {
  return run("hook", request, result, message, hook);
}

int evmdk_hook_cleanup(const char* request, char** result, char** message) {
  return run("hook cleanup", request, result, message, hook_cleanup);
}

int evmdk_verify(const char* request, char** result, char** message) {
  return run("verify", request, result, message, verify);
}

}  // extern "C"
