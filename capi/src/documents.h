#pragma once
// The result documents that the `erofs-vmdk` command prints and the C API returns, built in
// one place so the two never differ. (compose, hook, verify, teardown and status documents
// come from the libraries' own to_json; these two the libraries leave to their callers.)
#include <nlohmann/json.hpp>
#include <string>

#include "evmdk/guest/driver.h"
#include "evmdk/host/hook/hook.h"

namespace evmdk::documents {

// `guest mount`: {"rootfs", "rootfs_kind", "read_only", ..., "step_ms": {"dirs": ms, ...}}
nlohmann::json mount_result(const guest::MountResult& result);

// `hook cleanup`: {"id", "existed", "removed", "left", "kept"}
nlohmann::json cleanup_report(const std::string& id, const host::CleanupReport& report);

}  // namespace evmdk::documents
