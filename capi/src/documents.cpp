#include "documents.h"

#include <cmath>

namespace evmdk::documents {

nlohmann::json mount_result(const guest::MountResult& result) {
  nlohmann::json out{{"rootfs", result.rootfs},
                     {"rootfs_kind", result.rootfs_kind},
                     {"read_only", result.read_only},
                     {"bind_source", result.bind_source},
                     {"virtiofs_tag", result.virtiofs_tag},
                     {"upper", result.upper},
                     {"lowers", result.lowers},
                     {"loop_devices", result.loop_devices},
                     {"verity_devices", result.verity_devices},
                     {"flat_device_mode", result.flat_device_mode},
                     {"overlay_method", result.overlay_method},
                     {"dax", result.dax},
                     {"warnings", result.warnings}};
  nlohmann::json steps = nlohmann::json::object();
  // Tenths of a millisecond: finer is noise.
  for (const auto& [step, ms] : result.step_ms) steps[step] = std::round(ms * 10) / 10;
  out["step_ms"] = steps;
  return out;
}

nlohmann::json cleanup_report(const std::string& id, const host::CleanupReport& report) {
  return {{"id", id},
          {"existed", report.existed},
          {"removed", report.removed},
          {"left", report.left},
          {"kept", report.kept}};
}

}  // namespace evmdk::documents
