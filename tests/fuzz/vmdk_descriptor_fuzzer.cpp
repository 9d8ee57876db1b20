// libFuzzer target for the descriptor parser, linter, extent map and writer.
// Two modes, chosen by the first byte:
//  - reader: arbitrary bytes through both readings, the linter, the JSON/text reports and the
//    extent map; checks the map agrees with QEMU's reading at every extent boundary.
//  - writer: a Descriptor built from the bytes; whatever render() accepts must read back, as
//    QEMU reads it, to exactly the extent lines it emitted and lint without a single finding.
// Any crash, sanitizer report or failed check (abort) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "evmdk/error.h"
#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/lint.h"
#include "evmdk/vmdk/parser.h"
#include "fuzz_support.h"

namespace {

using namespace evmdk::vmdk;

using evmdk::fuzz::check;

void fuzz_reader(std::string_view text) {
  QemuReading qemu = read_as_qemu(text, "/fuzz/disk.vmdk");
  SpecReading spec = read_as_spec(text);
  (void)spec;
  LintReport report = lint_text(text, "/fuzz/disk.vmdk", LintOptions{.check_files = false});
  (void)to_json(report).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  (void)format_text(report);
  for (const Finding& finding : report.findings) {
    check(finding.line <= qemu.line_starts.size(), "finding line within the text");
  }
  if (report.has("not-a-descriptor")) {
    check(report.findings.size() == 1, "a sparse image gets exactly one finding");
    return;
  }
  if (!qemu.opens()) {
    check(report.has("qemu-open-error"), "an open failure is reported");
  }
  if (qemu.extents.empty()) check(report.has("no-usable-extent"), "empty disk is reported");
  if (!qemu.opens() || qemu.size_overflows) return;
  try {
    ExtentMap map = ExtentMap::from_qemu_reading(qemu);
    check(map.virtual_size() == qemu.total_sectors * kSectorSize, "map size = QEMU size");
    for (size_t i = 0; i < map.extents().size(); ++i) {
      const MappedExtent& extent = map.extents()[i];
      for (uint64_t at : {extent.virtual_offset, extent.virtual_offset + extent.length - 1}) {
        auto location = map.find(at);
        check(location && location->index == i, "lookup lands in the right extent");
        check(location->file_offset == extent.file_offset + (at - extent.virtual_offset),
              "lookup file offset");
      }
    }
    check(!map.find(map.virtual_size()), "nothing past the end");
    Descriptor model = to_descriptor(qemu);
    check(model.extents.size() == qemu.extents.size(), "model keeps every extent");
  } catch (const evmdk::Error&) {
    // Non-FLAT extents or create types: refused with a message, which is fine.
  }
}

// Reads little-endian integers off the input; zero when it runs out.
struct Bytes {
  std::string_view data;
  uint64_t take(size_t n) {
    uint64_t value = 0;
    for (size_t i = 0; i < n && !data.empty(); ++i) {
      value |= static_cast<uint64_t>(static_cast<unsigned char>(data.front())) << (8 * i);
      data.remove_prefix(1);
    }
    return value;
  }
  std::string take_string(size_t max) {
    size_t n = std::min<size_t>(take(1) % (max + 1), data.size());
    std::string s(data.substr(0, n));
    data.remove_prefix(n);
    return s;
  }
};

void fuzz_writer(std::string_view input) {
  Bytes bytes{input};
  Descriptor d;
  d.create_type = bytes.take(1) & 1 ? CreateType::MonolithicFlat : CreateType::TwoGbMaxExtentFlat;
  size_t count = bytes.take(1) % 24;
  for (size_t i = 0; i < count; ++i) {
    FlatExtent extent;
    extent.path = bytes.take_string(80);
    if (bytes.take(1) & 1) extent.path.insert(0, "/");
    // Mostly small numbers, sometimes huge ones to hit the overflow checks.
    int scale = static_cast<int>(bytes.take(1) % 64);
    extent.sectors = bytes.take(8) >> scale;
    extent.offset = bytes.take(8) >> scale;
    d.extents.push_back(std::move(extent));
  }
  std::string text;
  try {
    text = render(d);
  } catch (const evmdk::Error&) {
    return;  // refused with a message naming the extent
  }
  check(render(d) == text, "render is deterministic");
  QemuReading qemu = read_as_qemu(text, "/fuzz/disk.vmdk");
  check(qemu.opens(), "QEMU opens writer output");
  check(to_descriptor(qemu).extents == emitted_extents(d), "QEMU reads the emitted extents");
  check(qemu.total_sectors == total_sectors(d), "QEMU size = model size");
  LintReport report = lint_text(text, "/fuzz/disk.vmdk", LintOptions{.check_files = false});
  if (!report.findings.empty()) {
    std::fprintf(stderr, "%s", format_text(report).c_str());
    check(false, "writer output lints clean");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] == 'W') {
    fuzz_writer(input);
  } else {
    fuzz_reader(input);
  }
  return 0;
}
