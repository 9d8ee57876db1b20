// ExtentMap lookup (binary search) against a linear scan of the extents (what QEMU does on
// every request), and the cost of linting a descriptor, for growing extent counts.
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/lint.h"

namespace {

using namespace evmdk::vmdk;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Linear baseline: first extent whose end is past the offset.
size_t linear_find(const std::vector<MappedExtent>& extents, uint64_t offset) {
  for (size_t i = 0; i < extents.size(); ++i) {
    if (offset < extents[i].virtual_offset + extents[i].length) return i;
  }
  return extents.size();
}

}  // namespace

int main() {
  constexpr int kLookups = 2'000'000;
  fmt::print("{:>8} {:>14} {:>14} {:>8} {:>12}\n", "extents", "map ns/lookup", "scan ns/lookup",
             "speedup", "lint ms");
  for (size_t count : {10, 100, 768, 10000}) {
    Descriptor d;
    d.create_type = CreateType::MonolithicFlat;
    std::mt19937_64 rng(count);
    for (size_t i = 0; i < count; ++i) {
      d.extents.push_back({fmt::format("/var/lib/layers/{}.erofs", i % 50), 1 + rng() % 4096,
                           rng() % 4096});
    }
    ExtentMap map = ExtentMap::from_descriptor(d);
    std::vector<uint64_t> offsets(4096);
    for (auto& o : offsets) o = rng() % map.virtual_size();

    uint64_t checksum = 0;
    auto start = Clock::now();
    for (int i = 0; i < kLookups; ++i) checksum += map.find(offsets[i & 4095])->index;
    double map_ns = seconds_since(start) * 1e9 / kLookups;

    uint64_t baseline = 0;
    int scans = count > 1000 ? kLookups / 100 : kLookups / 10;
    start = Clock::now();
    for (int i = 0; i < scans; ++i) baseline += linear_find(map.extents(), offsets[i & 4095]);
    double scan_ns = seconds_since(start) * 1e9 / scans;

    double lint_ms = 0;
    if (count <= kMaxExtentLines) {
      std::string text = render(d);
      start = Clock::now();
      LintReport report = lint_text(text, "/bench/disk.vmdk", LintOptions{.check_files = false});
      lint_ms = seconds_since(start) * 1e3;
      if (!report.findings.empty()) fmt::print("unexpected findings:\n{}", format_text(report));
    }
    fmt::print("{:>8} {:>14.1f} {:>14.1f} {:>7.1f}x {:>12.2f}   (checks {} {})\n", count, map_ns,
               scan_ns, scan_ns / map_ns, lint_ms, checksum % 7, baseline % 7);
  }
  return 0;
}
