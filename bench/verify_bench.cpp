// Benchmark of `erofs-vmdk verify` against `cat` and `sha256sum` of the same files.
//
// For each disk size (default 1 GiB and 8 GiB) it builds real EROFS layers full of incompressible
// bytes (mkfs.erofs; the layers are real files, nothing is sparse except compose's zero filler),
// composes them into one GPT disk with host::compose, and measures:
//   warm (page cache hot):   cat FILES > /dev/null   vs  verify (read only)
//                            sha256sum FILES         vs  verify --digest sha256
//   cold (files evicted with posix_fadvise DONTNEED before each run, only ours):
//                            cat FILES               vs  verify --direct
//                            sha256sum FILES         vs  verify --direct --digest sha256
// and prints throughputs and the ratios. Targets: read >= 0.9x cat, digest >= 1.5x sha256sum.
//
//   bench_verify_bench [--sizes 1G,8G] [--layers N] [--dir DIR] [--repeat N] [--keep]
// Disk use: one disk at a time (the largest size, plus one layer's source while building).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verify/verify.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/extent_map.h"

namespace fs = std::filesystem;
using namespace evmdk;

namespace {

uint64_t parse_size(const std::string& text) {
  size_t used = 0;
  double value = std::stod(text, &used);
  std::string unit = text.substr(used);
  uint64_t scale = 1;
  if (unit == "K" || unit == "KiB") scale = 1ull << 10;
  else if (unit == "M" || unit == "MiB") scale = 1ull << 20;
  else if (unit == "G" || unit == "GiB") scale = 1ull << 30;
  else if (!unit.empty()) throw Error("bench: unknown size unit in {}", text);
  return static_cast<uint64_t>(value * static_cast<double>(scale));
}

// A file of `size` incompressible bytes: a random 1 MiB block, each copy stamped with its index.
void write_data_file(const std::string& path, uint64_t size, unsigned seed) {
  std::vector<uint64_t> block((1u << 20) / 8);
  std::mt19937_64 random(seed);
  for (auto& word : block) word = random();
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (uint64_t done = 0, index = 0; done < size; ++index) {
    block[0] = index;
    block[block.size() / 2] = index * 0x9E3779B97F4A7C15ull;
    size_t step = static_cast<size_t>(std::min<uint64_t>(size - done, 1u << 20));
    write_all(fd.get(), block.data(), step, path);
    done += step;
  }
}

double seconds_of(const std::function<void()>& work) {
  auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void shell(const std::string& command) {
  if (std::system(command.c_str()) != 0) throw Error("bench: '{}' failed", command);
}

void evict(const std::vector<std::string>& files) {
  for (const auto& file : files) {
    UniqueFd fd = open_or_throw(file, O_RDONLY);
    ::fdatasync(fd.get());
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  }
}

struct Options {
  std::vector<uint64_t> sizes{1ull << 30, 8ull << 30};
  unsigned layers = 0;  // 0: 4 for <= 1 GiB, else 8
  std::string dir;
  unsigned repeat = 2;
  bool keep = false;
};

double best_of(unsigned repeat, const std::function<void()>& before, const std::function<void()>& work) {
  double best = 1e300;
  for (unsigned i = 0; i < repeat; ++i) {
    before();
    best = std::min(best, seconds_of(work));
  }
  return best;
}

void bench_size(const Options& options, uint64_t size) {
  unsigned layer_count = options.layers != 0 ? options.layers : (size <= (1ull << 30) ? 4 : 8);
  fs::path root = fs::path(options.dir) / fmt::format("verify-bench-{}", size);
  fs::remove_all(root);
  fs::create_directories(root);
  uint64_t per_layer = size / layer_count;
  std::vector<std::string> layers;
  fmt::print("== {} GiB disk: {} layers of {} MiB (building with mkfs.erofs)\n",
             static_cast<double>(size) / (1ull << 30), layer_count, per_layer >> 20);
  std::fflush(stdout);
  for (unsigned i = 0; i < layer_count; ++i) {
    fs::path source = root / fmt::format("src-{}", i);
    fs::create_directories(source);
    // Leave room for metadata so the image is about per_layer bytes.
    write_data_file((source / "data").string(), per_layer - (64u << 10), i + 1);
    std::string image = (root / fmt::format("layer-{}.erofs", i)).string();
    shell(fmt::format("mkfs.erofs -T0 '{}' '{}' >/dev/null 2>&1", image, source.string()));
    fs::remove_all(source);
    layers.push_back(image);
  }
  host::ComposeOptions compose_options;
  compose_options.mode = host::ComposeMode::Gpt;
  for (const auto& layer : layers) compose_options.layers.push_back({layer, {}});
  compose_options.output_dir = (root / "disk").string();
  host::compose(compose_options);

  // "The same files": every file the descriptor reads (layers, GPT head and tail, zero filler).
  auto map = vmdk::ExtentMap::from_file((root / "disk" / "disk.vmdk").string());
  std::vector<std::string> files;
  for (const auto& extent : map.extents()) {
    if (std::find(files.begin(), files.end(), extent.path) == files.end()) files.push_back(extent.path);
  }
  std::string file_list;
  for (const auto& file : files) file_list += " '" + file + "'";
  double bytes = static_cast<double>(map.virtual_size());

  auto verify = [&](bool digest, bool direct) {
    host::VerifyOptions verify_options;
    verify_options.target = (root / "disk").string();
    verify_options.digest = digest;
    verify_options.direct = direct;
    verify_options.progress = false;
    auto report = host::verify_disk(verify_options);
    if (!report.ok()) throw Error("bench: verify failed: {}", report.problems.front());
  };
  auto nothing = [] {};
  auto cold = [&] { evict(files); };
  auto warm_up = [&] { shell("cat" + file_list + " > /dev/null"); };
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  struct Row {
    std::string what, baseline_name;
    double baseline, ours, target;
  };
  std::vector<Row> rows;
  warm_up();
  rows.push_back({"warm read   verify", "cat",
                  best_of(options.repeat, nothing, [&] { shell("cat" + file_list + " > /dev/null"); }),
                  best_of(options.repeat, nothing, [&] { verify(false, false); }), 0.9});
  rows.push_back({"warm digest verify --digest", "sha256sum",
                  best_of(options.repeat, nothing, [&] { shell("sha256sum" + file_list + " > /dev/null"); }),
                  best_of(options.repeat, nothing, [&] { verify(true, false); }), 1.5});
  rows.push_back({"cold read   verify --direct", "cat",
                  best_of(options.repeat, cold, [&] { shell("cat" + file_list + " > /dev/null"); }),
                  best_of(options.repeat, cold, [&] { verify(false, true); }), 0.9});
  rows.push_back({"cold digest verify --direct --digest", "sha256sum",
                  best_of(options.repeat, cold, [&] { shell("sha256sum" + file_list + " > /dev/null"); }),
                  best_of(options.repeat, cold, [&] { verify(true, true); }), 1.5});

  fmt::print("{:<38} {:>10} {:>12} {:>12} {:>7} {:>7}\n", "case (" + std::to_string(cores) + " cores)", "baseline",
             "base MiB/s", "ours MiB/s", "ratio", "target");
  for (const auto& row : rows) {
    double base_rate = bytes / row.baseline / (1 << 20), our_rate = bytes / row.ours / (1 << 20);
    double ratio = row.baseline / row.ours;
    fmt::print("{:<38} {:>10} {:>12.0f} {:>12.0f} {:>6.2f}x {:>6.1f}x {}\n", row.what, row.baseline_name, base_rate,
               our_rate, ratio, row.target, ratio >= row.target ? "ok" : "BELOW TARGET");
  }
  std::fflush(stdout);
  if (!options.keep) fs::remove_all(root);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  options.dir = fs::temp_directory_path().string();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("bench: {} needs a value", arg);
      return argv[++i];
    };
    try {
      if (arg == "--sizes") {
        options.sizes.clear();
        std::string list = value();
        for (size_t start = 0; start <= list.size();) {
          size_t comma = list.find(',', start);
          if (comma == std::string::npos) comma = list.size();
          options.sizes.push_back(parse_size(list.substr(start, comma - start)));
          start = comma + 1;
        }
      } else if (arg == "--layers") {
        options.layers = static_cast<unsigned>(std::stoul(value()));
      } else if (arg == "--dir") {
        options.dir = value();
      } else if (arg == "--repeat") {
        options.repeat = std::max(1u, static_cast<unsigned>(std::stoul(value())));
      } else if (arg == "--keep") {
        options.keep = true;
      } else {
        fmt::print(stderr, "usage: {} [--sizes 1G,8G] [--layers N] [--dir DIR] [--repeat N] [--keep]\n", argv[0]);
        return 2;
      }
      } catch (const std::invalid_argument&) {
      fmt::print(stderr, "bench: bad value for {}\n", arg);
      return 2;
    }
  }
  try {
    for (uint64_t size : options.sizes) bench_size(options, size);
  } catch (const std::exception& error) {
    fmt::print(stderr, "bench: {}\n", error.what());
    return 1;
  }
  return 0;
}
