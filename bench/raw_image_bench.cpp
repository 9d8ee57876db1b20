// Read speed of a composed disk through QEMU's block layer (`qemu-img bench`) as disk.vmdk, as
// the raw image assembled by reflink, and as a plain copy of that image (`cp --reflink=never`),
// at QD 1 and 16, 4 KiB and 64 KiB, page-cached and O_DIRECT (-t none -i native), on an XFS
// loop volume (mkfs.xfs -m reflink=1; the loop device in direct-I/O mode, so O_DIRECT reaches
// the disk below). Prints median seconds and two ratios: reflinked/plain (target <= 1.05:
// sharing costs reads nothing) and VMDK/reflinked (the speed-up; target >= 2.5 at QD16,
// 64 KiB). Then the time to assemble the raw image of 1, 16, 128 and 250 layers.
// Usage (root): bench_raw_image_bench [layer MiB (768)] [layers (3)] [repetitions (3)]
//                                     [read|assemble|all (all)]
// Needs mkfs.xfs, mkfs.erofs, qemu-img, losetup, cp; works in /var/tmp (a sparse 12 GiB file).
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/raw_image.h"
#include "evmdk/process.h"
#include "evmdk/unique_fd.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using evmdk::run_process;

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

[[noreturn]] void die(const std::string& message) {
  fmt::print(stderr, "raw_image_bench: {}\n", message);
  std::exit(1);
}

// Throws, so the loop volume's destructor still unmounts it.
std::string must_run(const std::vector<std::string>& argv) {
  auto result = run_process(argv);
  if (result.exit_code != 0) {
    throw std::runtime_error(fmt::format("{} failed: {}{}", argv[0], result.out, result.err));
  }
  return result.out;
}

double median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

void write_random_file(const std::string& path, uint64_t size, uint64_t seed) {
  evmdk::UniqueFd fd = evmdk::open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<uint64_t> words(kMiB / 8);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t done = 0; done < size; done += kMiB) {
    for (auto& word : words) {  // splitmix64: incompressible, much faster than /dev/urandom
      uint64_t z = (state += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      word = z ^ (z >> 31);
    }
    evmdk::write_all(fd.get(), words.data(), static_cast<size_t>(std::min(kMiB, size - done)),
                     path);
  }
}

// An EROFS layer of one random file of `bytes`, built by mkfs.erofs.
std::string make_layer(const fs::path& work, const fs::path& volume, size_t index, uint64_t bytes) {
  fs::path tree = work / fmt::format("tree{}", index);
  fs::create_directories(tree);
  write_random_file((tree / "data").string(), bytes, index + 1);
  std::string layer = (volume / "layers" / fmt::format("layer{}.erofs", index)).string();
  must_run({"mkfs.erofs", "--quiet", "-T", "0", layer, tree.string()});
  fs::remove_all(tree);
  return layer;
}

evmdk::host::ComposeResult compose_gpt(const std::vector<std::string>& layers,
                                       const std::string& out) {
  evmdk::host::ComposeOptions options;
  options.mode = evmdk::host::ComposeMode::Gpt;
  for (const auto& layer : layers) options.layers.push_back({layer, {}});
  options.output_dir = out;
  return evmdk::host::compose(options);
}

// Reads a file whole so its pages are cached.
void warm(const std::string& path) {
  evmdk::UniqueFd fd = evmdk::open_or_throw(path, O_RDONLY);
  std::vector<char> buffer(4 * kMiB);
  while (::read(fd.get(), buffer.data(), buffer.size()) > 0) {}
}

// One `qemu-img bench` run: seconds as it reports them ("Run completed in X seconds.").
double qemu_bench(const std::string& format, const std::string& file, uint64_t count, int depth,
                  uint64_t size, bool direct) {
  std::vector<std::string> argv{"qemu-img", "bench",
                                "-f",       format,
                                "-c",       std::to_string(count),
                                "-d",       std::to_string(depth),
                                "-s",       std::to_string(size)};
  // O_DIRECT as -n means it (cache=none, aio=native). qemu-img 7.2's -n alone sets aio=native
  // but leaves the default cache=writeback, and then no image opens at all.
  if (direct) argv.insert(argv.end(), {"-t", "none", "-i", "native"});
  argv.push_back(file);
  std::string out = must_run(argv);
  auto at = out.find("Run completed in ");
  if (at == std::string::npos) throw std::runtime_error("unexpected qemu-img bench output: " + out);
  return std::stod(out.substr(at + 17));
}

class XfsVolume {
 public:
  XfsVolume(const fs::path& work, uint64_t size) : mountpoint_(work / "xfs") {
    std::string backing = (work / "xfs.img").string();
    {
      evmdk::UniqueFd fd = evmdk::open_or_throw(backing, O_RDWR | O_CREAT | O_TRUNC, 0600);
      if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
        throw std::runtime_error("cannot size " + backing);
      }
    }
    must_run({"mkfs.xfs", "-q", "-f", "-m", "reflink=1", backing});
    std::string out = must_run({"losetup", "--find", "--show", "--direct-io=on", backing});
    device_ = out.substr(0, out.find('\n'));
    fs::create_directories(mountpoint_);
    if (::mount(device_.c_str(), mountpoint_.c_str(), "xfs", 0, nullptr) != 0) {
      std::string why = strerror(errno);
      run_process({"losetup", "--detach", device_});
      throw std::runtime_error(fmt::format("mount {}: {}", device_, why));
    }
  }
  ~XfsVolume() {
    ::umount2(mountpoint_.c_str(), 0);
    run_process({"losetup", "--detach", device_});
  }
  const fs::path& path() const { return mountpoint_; }

 private:
  fs::path mountpoint_;
  std::string device_;
};

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void read_benchmark(const fs::path& work, const XfsVolume& volume, uint64_t layer_mib,
                    size_t layer_count, int repetitions) {
  std::vector<std::string> layers;
  fmt::print("building {} layers of {} MiB random data with mkfs.erofs ...\n", layer_count,
             layer_mib);
  for (size_t i = 0; i < layer_count; ++i) {
    layers.push_back(make_layer(work, volume.path(), i, layer_mib * kMiB));
  }
  std::string out = (volume.path() / "disk").string();
  auto composed = compose_gpt(layers, out);
  std::string vmdk = out + "/disk.vmdk";
  std::string reflinked = out + "/disk.img";
  ::sync();  // FICLONERANGE would first write back the fresh layers: not assembly's cost
  auto start = Clock::now();
  auto report = evmdk::host::assemble_raw_image_from_descriptor(vmdk, reflinked);
  double assemble_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::string plain = (volume.path() / "plain.img").string();
  start = Clock::now();
  must_run({"cp", "--reflink=never", reflinked, plain});
  must_run({"sync", "-f", plain});
  double copy_s = std::chrono::duration<double>(Clock::now() - start).count();
  uint64_t disk_bytes = composed.disk_sectors * 512;
  fmt::print(
      "disk: {} layers, {:.2f} GB ({} bytes); raw image assembled in {:.3f} s ({:.1f} MiB "
      "shared, {:.1f} KiB copied, reflinked: {}); plain copy (cp --reflink=never + "
      "sync) {:.2f} s\n",
      layer_count, disk_bytes / 1e9, disk_bytes, assemble_s, report.shared_bytes / 1048576.0,
      report.copied_bytes / 1024.0, report.reflinked ? "yes" : "no", copy_s);

  struct Target {
    const char* label;
    std::string format, file;
    std::vector<std::string> cache;  // what to read so its pages are cached
  };
  std::vector<Target> targets{{"vmdk", "vmdk", vmdk, layers},
                              {"reflinked", "raw", reflinked, {reflinked}},
                              {"plain", "raw", plain, {plain}}};
  for (const auto& layer_file : {composed.extents.front().path, composed.extents.back().path}) {
    targets[0].cache.push_back(layer_file);  // the GPT head and tail files
  }
  fmt::print("load average before: {}\n\n", loadavg());
  fmt::print("{:<9} {:>4} {:>7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "cache",
             "QD", "block", "requests", "vmdk s", "reflink s", "plain s", "refl/plain", "vmdk/refl",
             "best r/p", "best v/r");
  for (bool direct : {false, true}) {
    if (!direct) {
      for (const auto& target : targets) {
        for (const auto& file : target.cache) warm(file);
      }
    }
    for (int depth : {1, 16}) {
      for (uint64_t size : {uint64_t{4096}, uint64_t{65536}}) {
        // Page-cached: one pass over the whole disk. O_DIRECT reaches the virtual disk below,
        // so fewer bytes (128 MiB at 4 KiB, 1 GiB at 64 KiB) keep a run to seconds.
        uint64_t bytes = direct ? (size == 4096 ? 128 * kMiB : 1024 * kMiB) : disk_bytes;
        uint64_t count = std::min(bytes, disk_bytes) / size;
        // Repetitions interleave the three files, so load from elsewhere hits them alike.
        std::map<std::string, std::vector<double>> samples;
        for (int r = 0; r < repetitions; ++r) {
          for (const auto& target : targets) {
            samples[target.label].push_back(
                qemu_bench(target.format, target.file, count, depth, size, direct));
          }
        }
        std::map<std::string, double> med, best;
        for (auto& [label, values] : samples) {
          med[label] = median(values);
          best[label] = *std::min_element(values.begin(), values.end());
        }
        fmt::print(
            "{:<9} {:>4} {:>5}Ki {:>8} {:>10.3f} {:>10.3f} {:>10.3f} {:>9.3f}x {:>9.2f}x"
            " {:>9.3f}x {:>9.2f}x\n",
            direct ? "O_DIRECT" : "cached", depth, size / 1024, count, med["vmdk"],
            med["reflinked"], med["plain"], med["reflinked"] / med["plain"],
            med["vmdk"] / med["reflinked"], best["reflinked"] / best["plain"],
            best["vmdk"] / best["reflinked"]);
        std::fflush(stdout);
      }
    }
  }
  fmt::print("load average after: {}\n", loadavg());
  fmt::print(
      "\nseconds: median of {} `qemu-img bench` runs (sequential reads; cached: "
      "default cache and aio=threads; O_DIRECT: -t none -i native), the three files "
      "interleaved; refl/plain: reflinked time / plain copy time (<= 1.05 is the target); "
      "vmdk/refl: VMDK time / reflinked time (the raw image's speed-up; >= 2.5 at QD16 "
      "64 KiB is the target); best r/p, best v/r: the same ratios of the fastest runs\n",
      repetitions);
  fs::remove(plain);
  fs::remove_all(volume.path() / "layers");
  fs::remove_all(out);
  fs::create_directories(volume.path() / "layers");
}

void assembly_benchmark(const fs::path& work, const XfsVolume& volume, int repetitions) {
  constexpr size_t kMaxLayers = 250;
  constexpr uint64_t kLayerBytes = 4 * kMiB;
  fmt::print("\nbuilding {} layers of {} MiB with mkfs.erofs ...\n", kMaxLayers,
             kLayerBytes / kMiB);
  std::vector<std::string> layers;
  for (size_t i = 0; i < kMaxLayers; ++i) {
    layers.push_back(make_layer(work, volume.path(), 1000 + i, kLayerBytes));
  }
  ::sync();
  fmt::print("\n{:>7} {:>10} {:>12} {:>14} {:>12} {:>12} {:>11}\n", "layers", "disk MiB",
             "compose ms", "assemble ms", "shared MiB", "copied KiB", "cp ms");
  for (size_t count : {size_t{1}, size_t{16}, size_t{128}, size_t{250}}) {
    std::vector<std::string> subset(layers.begin(), layers.begin() + static_cast<long>(count));
    std::string out = (volume.path() / fmt::format("asm{}", count)).string();
    std::vector<double> compose_ms, assemble_ms, copy_ms;
    evmdk::host::RawImageReport report;
    for (int r = 0; r < repetitions; ++r) {
      auto start = Clock::now();
      compose_gpt(subset, out);
      compose_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      start = Clock::now();
      report =
          evmdk::host::assemble_raw_image_from_descriptor(out + "/disk.vmdk", out + "/disk.img");
      assemble_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      start = Clock::now();
      must_run({"cp", "--reflink=never", out + "/disk.img", out + "/copy.img"});
      must_run({"sync", "-f", out + "/copy.img"});
      copy_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      fs::remove(out + "/copy.img");
    }
    fmt::print("{:>7} {:>10.1f} {:>12.1f} {:>14.1f} {:>12.1f} {:>12.1f} {:>11.1f}\n", count,
               report.size / 1048576.0, median(compose_ms), median(assemble_ms),
               report.shared_bytes / 1048576.0, report.copied_bytes / 1024.0, median(copy_ms));
    std::fflush(stdout);
    fs::remove_all(out);
  }
  fmt::print(
      "\ncompose = plan + outputs (descriptor, GPT, zero filler, json); assemble = the raw "
      "image from disk.vmdk (reflink, fsync, rename); cp = `cp --reflink=never` + sync "
      "of that image, for scale. Medians of {} runs.\n",
      repetitions);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t layer_mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 768;
  size_t layer_count = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 3;
  int repetitions = argc > 3 ? std::atoi(argv[3]) : 3;
  std::string parts = argc > 4 ? argv[4] : "all";
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when redirected to a file
  if (::geteuid() != 0) die("needs root (a loop-mounted XFS volume)");
  if (layer_mib == 0 || layer_count == 0 || repetitions <= 0) die("bad arguments");
  char pattern[] = "/var/tmp/evmdk-raw-bench-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
  fs::path work = pattern;
  struct utsname name {};
  ::uname(&name);
  try {
    std::string qemu = must_run({"qemu-img", "--version"});
    fmt::print("kernel {}, {} CPUs, {}\n", name.release, ::sysconf(_SC_NPROCESSORS_ONLN),
               qemu.substr(0, qemu.find('\n')));
    XfsVolume volume(work, 12 * 1024 * kMiB);
    fs::create_directories(volume.path() / "layers");
    if (parts == "all" || parts == "read") {
      read_benchmark(work, volume, layer_mib, layer_count, repetitions);
    }
    if (parts == "all" || parts == "assemble") assembly_benchmark(work, volume, repetitions);
  } catch (const std::exception& error) {
    fs::remove_all(work);
    die(error.what());
  }
  fs::remove_all(work);
  return 0;
}
