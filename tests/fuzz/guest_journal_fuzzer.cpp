// libFuzzer target for the guest's journal reader (the journal is input too): any bytes
// through parse_journal and validate_journal. What survives validation must be this
// container's own: paths under its directory or the recorded rootfs (or the rootfs's parents
// outside the base), /dev/loopN devices with an identity, dm names with its prefix; and it must
// round-trip through to_json. Errors are fine; crashes or a broken rule (abort) are bugs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "evmdk/error.h"
#include "fuzz_support.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/safe_path.h"

namespace {

using namespace evmdk;
using namespace evmdk::guest;

using fuzz::check;

constexpr const char* kBase = "/run/erofs-vmdk";
constexpr const char* kId = "c1";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Journal journal;
  try {
    journal = parse_journal(text, "fuzz");
  } catch (const Error&) {
    return 0;
  }
  // Round trip of whatever parsed.
  try {
    Journal again = parse_journal(to_json(journal).dump(), "fuzz round trip");
    check(to_json(again) == to_json(journal), "journal round-trips");
  } catch (const Error&) {
    check(false, "a parsed journal re-parses");
  }
  std::string rootfs = size % 2 ? std::string() : std::string("/run/c1/rootfs");
  validate_journal(journal, kBase, kId, rootfs);
  std::string container_dir = std::string(kBase) + "/" + kId;
  if (!rootfs.empty()) check(journal.rootfs.empty() || journal.rootfs == rootfs, "rootfs is the expected one");
  if (!journal.rootfs.empty()) {
    check(rootfs_refusal(journal.rootfs, kBase, kId).empty(), "a kept rootfs is acceptable");
  }
  for (const auto& mount : journal.mounts) {
    check(is_at_or_under(mount.path, container_dir) || mount.path == journal.rootfs, "mounts are ours");
    check(mount.path == normal_absolute(mount.path), "mount paths are normal");
  }
  for (const auto& dir : journal.created_dirs) {
    check(dir != "/" && !is_at_or_under(kBase, dir), "never the base or above it");
    check(is_at_or_under(dir, container_dir) ||
              (!journal.rootfs.empty() && is_at_or_under(journal.rootfs, dir) && !is_at_or_under(dir, kBase)),
          "directories are ours or the rootfs's parents");
  }
  for (const auto& loop : journal.loops) {
    check(loop.device.rfind("/dev/loop", 0) == 0 && loop.device.size() > 9, "loops are /dev/loopN");
  }
  for (const auto& name : journal.verity_devices) {
    check(name.rfind(verity_name_prefix(kId), 0) == 0 && name.size() <= 127, "dm names carry our prefix");
  }
  return 0;
}
