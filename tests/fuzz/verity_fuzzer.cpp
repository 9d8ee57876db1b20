// libFuzzer target for dm-verity inputs from a layer's publisher: the `.dmverity` sidecar JSON,
// the 512-byte superblock at hashoffset, and both together through inspect_verity_layer (what
// `inspect`, `compose`, `hook` and `verity show` run). Modes, by the first byte:
//  'J': the rest is a sidecar;
//  'S': 16 bytes of hash offset and file size, then a superblock: parsed, laid out against
//       that file (checked sizes), serialised back;
//  else: a layer file and its sidecar (split at the first 0xff 0xfe pair) in a temp directory.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <filesystem>
#include <string>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/unique_fd.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace host = evmdk::host;

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

void fuzz_superblock(const uint8_t* data, size_t size) {
  if (size < 16) return;
  uint64_t hash_offset = le64(data);
  uint64_t file_size = le64(data + 8);
  std::span<const uint8_t> bytes(data + 16, size - 16);
  host::VeritySuperblock sb;
  try {
    sb = host::parse_verity_superblock(bytes, "fuzz");
  } catch (const evmdk::Error&) {
    return;
  }
  check(host::verity_algorithm_allowed(sb.algorithm), "only allowed algorithms parse");
  auto again = host::serialize_verity_superblock(sb);
  check(host::parse_verity_superblock(again, "fuzz") == sb, "serialise round-trips");
  try {
    auto layout = host::verity_layout(sb, hash_offset, file_size, "fuzz");
    check(layout.data_bytes <= hash_offset, "data before the tree");
    check(layout.hash_end <= file_size, "the tree inside the file");
    check(layout.geometry.tree_blocks <= file_size / sb.hash_block_size, "tree bounded by the file");
  } catch (const evmdk::Error&) {
  }
}

// A private directory for the layer and its sidecar (the sidecar is found by name).
const std::string& work_dir() {
  static const std::string dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "verity-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    return pattern;
  }();
  return dir;
}

void fuzz_layer(std::string_view input) {
  const std::string layer = work_dir() + "/layer.erofs";
  size_t split = input.find("\xff\xfe");
  std::string_view data = input.substr(0, split);
  {
    evmdk::UniqueFd fd(::open(layer.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) std::abort();
    if (!data.empty()) evmdk::write_all(fd.get(), data.data(), data.size(), layer, 0);
  }
  const std::string sidecar = host::verity_sidecar_path(layer);
  ::unlink(sidecar.c_str());
  if (split != std::string_view::npos) {
    std::string_view text = input.substr(split + 2);
    evmdk::UniqueFd fd(::open(sidecar.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) std::abort();
    if (!text.empty()) evmdk::write_all(fd.get(), text.data(), text.size(), sidecar, 0);
  }
  try {
    auto info = host::inspect_verity_layer(layer);
    if (!info) return;
    check(info->hash_end <= data.size(), "an accepted tree lies inside the layer");
    check(host::verity_algorithm_allowed(info->superblock.algorithm), "allowed algorithm");
    (void)host::verity_options(*info);
  } catch (const evmdk::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] == 'J') {
    try {
      auto sidecar = host::parse_verity_sidecar(rest, "fuzz.dmverity");
      auto again = host::parse_verity_sidecar(host::verity_sidecar_json(sidecar), "fuzz.dmverity");
      check(again == sidecar, "sidecar round-trips");
    } catch (const evmdk::Error&) {
    }
  } else if (data[0] == 'S') {
    fuzz_superblock(data + 1, size - 1);
  } else {
    fuzz_layer(rest);
  }
  return 0;
}
