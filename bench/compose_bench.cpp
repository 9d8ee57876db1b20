// Compose time for 1, 16, 128 and 250 layers next to the floor: the bare cost of opening each
// layer and reading its superblock (what any composer must do). Prints the ratio.
// Usage: bench_compose_bench [repetitions]   (needs mkfs.erofs; builds its layers in /tmp)
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "evmdk/host/compose/compose.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

template <typename F>
double time_ms(int repetitions, F&& body) {
  std::vector<double> samples;
  for (int i = 0; i < repetitions; ++i) {
    auto start = Clock::now();
    body();
    samples.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return median(samples);
}

void read_superblocks(const std::vector<std::string>& layers) {
  char superblock[128];
  for (const auto& layer : layers) {
    int fd = ::open(layer.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::pread(fd, superblock, sizeof superblock, 1024) != sizeof superblock) {
      fmt::print(stderr, "cannot read {}\n", layer);
      std::exit(1);
    }
    ::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int repetitions = argc > 1 ? std::atoi(argv[1]) : 7;
  char pattern[] = "/tmp/evmdk-compose-bench-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return 1;
  fs::path work = pattern;
  constexpr size_t kMaxLayers = 250;
  std::vector<std::string> layers;
  fmt::print("building {} layers with mkfs.erofs in {} ...\n", kMaxLayers, work.string());
  for (size_t i = 0; i < kMaxLayers; ++i) {
    fs::path tree = work / fmt::format("tree{}", i);
    fs::create_directories(tree / "etc");
    std::ofstream(tree / "etc" / "layer") << i << "\n" << std::string(20000, 'x');
    std::string image = (work / fmt::format("layer{}.erofs", i)).string();
    std::string command = fmt::format("mkfs.erofs --quiet -T 0 '{}' '{}' >/dev/null 2>&1", image,
                                      tree.string());
    if (std::system(command.c_str()) != 0) {
      fmt::print(stderr, "mkfs.erofs failed (is erofs-utils installed?)\n");
      return 1;
    }
    layers.push_back(image);
  }

  fmt::print("\n{:>7} {:>12} {:>12} {:>14} {:>10} {:>10}\n", "layers", "floor ms", "plan ms",
             "compose ms", "plan/floor", "compose/floor");
  for (size_t count : {size_t{1}, size_t{16}, size_t{128}, size_t{250}}) {
    std::vector<std::string> subset(layers.begin(), layers.begin() + static_cast<long>(count));
    evmdk::host::ComposeOptions options;
    options.mode = count == 1 ? evmdk::host::ComposeMode::Raw : evmdk::host::ComposeMode::Gpt;
    for (const auto& layer : subset) options.layers.push_back({layer, {}});
    options.output_dir = (work / fmt::format("out{}", count)).string();
    read_superblocks(subset);  // warm the page cache for every measurement alike
    double floor = time_ms(repetitions, [&] { read_superblocks(subset); });
    double plan = time_ms(repetitions, [&] { evmdk::host::plan_compose(options); });
    double compose = time_ms(repetitions, [&] { evmdk::host::compose(options); });
    fmt::print("{:>7} {:>12.3f} {:>12.3f} {:>14.3f} {:>9.1f}x {:>9.1f}x\n", count, floor, plan,
               compose, plan / floor, compose / floor);
  }
  fmt::print("\nfloor = open + pread of each superblock + close; plan = probe (superblock, "
             "CRC32C, libblkid) + layout; compose = plan + writing and fsyncing the outputs.\n");
  fs::remove_all(work);
  return 0;
}
