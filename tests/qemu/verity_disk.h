#pragma once
// The disk of the guest's dm-verity scenarios: two EROFS layers, each verity-formatted and
// composed in gpt mode with --verity=on. The top layer carries a large file whose data a test
// corrupts after compose (in the layer file the VMDK extent points at) to see the guest refuse
// to read it.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <string>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/host/verity/verity_compose.h"
#include "harness/process.h"
#include "test_support.h"

namespace evmdk::qemu {

inline constexpr std::string_view kVerityMarker = "EVMDK-VERITY-MARKER";

// data/big of the top layer: many blocks, the marker first so the data can be found.
inline std::string verity_big_file() {
  std::string s(kVerityMarker);
  for (int i = 0; i < 20000; ++i) s += fmt::format("{:08x}", i * 2654435761u);
  return s;
}

// dir/top.erofs (etc/motd "top layer", data/big) over dir/bottom.erofs (etc/motd "bottom
// layer", etc/os-release "ID=evmdk"), composed into dir/out under `serial` (compose's default
// when empty).
inline host::ComposeResult compose_verity_disk(const std::string& dir, const std::string& serial = {}) {
  std::filesystem::create_directories(dir);
  test::make_tree(dir + "/top.d", {{"etc/motd", "top layer\n"}, {"data/big", verity_big_file()}});
  test::make_tree(dir + "/bottom.d", {{"etc/motd", "bottom layer\n"}, {"etc/os-release", "ID=evmdk\n"}});
  test::make_erofs(dir + "/top.d", dir + "/top.erofs");
  test::make_erofs(dir + "/bottom.d", dir + "/bottom.erofs");
  host::verity_format(dir + "/top.erofs", {});
  host::verity_format(dir + "/bottom.erofs", {});
  host::ComposeOptions options;
  options.mode = host::ComposeMode::Gpt;
  options.layers = {{dir + "/top.erofs", {}}, {dir + "/bottom.erofs", {}}};
  options.output_dir = dir + "/out";
  if (!serial.empty()) options.serial = serial;
  options.check_blkid = false;
  auto report = host::apply_verity_policy(options, host::VerityPolicy::kOn);
  if (!report.unprotected().empty()) {
    throw HarnessError(fmt::format("--verity=on left layers unprotected: {}", fmt::join(report.unprotected(), ", ")));
  }
  return host::compose(options);
}

// Flips one byte of data/big's data in dir/top.erofs and returns its offset in that file.
inline size_t corrupt_verity_big_file(const std::string& dir) {
  std::string top = test::read_file(dir + "/top.erofs");
  size_t marker = top.find(kVerityMarker);
  if (marker == std::string::npos) throw HarnessError("no " + std::string(kVerityMarker) + " in " + dir + "/top.erofs");
  size_t flip = marker + 50000;
  top[flip] = static_cast<char>(top[flip] ^ 0x20);
  test::write_file(dir + "/top.erofs", top);
  return flip;
}

}  // namespace evmdk::qemu
