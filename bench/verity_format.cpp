// verity format throughput on a 1 GiB layer against `veritysetup format` on the same file
// (same parameters: sha256, 4096/4096, hash type 1, zero salt, fixed UUID), as a ratio.
// Both run on a page-cached file; each is run several times alternately and the best is kept.
// Usage: bench_verity_format [SIZE_MIB=1024] [RUNS=3] [DIR=/var/tmp]
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "evmdk/error.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/unique_fd.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

int run_quiet(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Drops the tree and sidecar so the file is the bare layer again.
void reset(const std::string& path, uint64_t size) {
  std::filesystem::resize_file(path, size);
  std::filesystem::remove(path + ".dmverity");
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mib = argc > 1 ? std::stoull(argv[1]) : 1024;
  int runs = argc > 2 ? std::stoi(argv[2]) : 3;
  std::string dir = argc > 3 ? argv[3] : "/var/tmp";
  const uint64_t size = mib << 20;
  const std::string uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
  std::string path = fmt::format("{}/evmdk-bench-verity-{}.img", dir, ::getpid());
  try {
    {
      evmdk::UniqueFd fd = evmdk::open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      std::mt19937_64 rng(42);
      std::vector<uint64_t> chunk((1 << 20) / 8);
      for (uint64_t off = 0; off < size; off += 1 << 20) {
        for (auto& word : chunk) word = rng();
        evmdk::write_all(fd.get(), chunk.data(), 1 << 20, path);
      }
    }
    double best_ours = 1e9, best_theirs = 1e9;
    bool identical = true;
    auto tail = [&] {  // superblock + tree bytes
      std::ifstream in(path, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(size));
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    for (int run = 0; run < runs; ++run) {
      reset(path, size);
      auto start = Clock::now();
      int rc = run_quiet({"veritysetup", "format", path, path, fmt::format("--hash-offset={}", size),
                          "--salt=" + std::string(64, '0'), "--uuid=" + uuid});
      double theirs = std::chrono::duration<double>(Clock::now() - start).count();
      if (rc != 0) throw evmdk::Error("veritysetup format failed (exit {})", rc);
      best_theirs = std::min(best_theirs, theirs);
      std::string tree_theirs = tail();

      reset(path, size);
      evmdk::host::VerityFormatOptions options;
      options.uuid = evmdk::host::parse_uuid(uuid);
      start = Clock::now();
      auto result = evmdk::host::verity_format(path, options);
      double ours = std::chrono::duration<double>(Clock::now() - start).count();
      best_ours = std::min(best_ours, ours);
      identical = identical && tail() == tree_theirs && !result.sidecar.root_hash.empty();
    }
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".dmverity");
    double mib_s_ours = double(mib) / best_ours, mib_s_theirs = double(mib) / best_theirs;
    fmt::print("verity format, {} MiB layer, best of {} (page-cached, {} threads)\n", mib, runs,
               std::max(1u, std::thread::hardware_concurrency()));
    fmt::print("  erofs-vmdk verity format: {:8.3f} s  {:8.1f} MiB/s\n", best_ours, mib_s_ours);
    fmt::print("  veritysetup format:       {:8.3f} s  {:8.1f} MiB/s\n", best_theirs, mib_s_theirs);
    fmt::print("  ratio (erofs-vmdk / veritysetup throughput): {:.2f}x\n", mib_s_ours / mib_s_theirs);
    fmt::print("  superblock + hash tree {}\n", identical ? "bit-identical" : "DIFFER");
    return identical ? 0 : 1;
  } catch (const std::exception& error) {
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".dmverity");
    fmt::print(stderr, "bench_verity_format: {}\n", error.what());
    return 1;
  }
}
