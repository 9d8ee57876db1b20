// `erofs-vmdk verify`: thin over evmdk::host::verify_disk (evmdk/host/verify/verify.h).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "commands.h"
#include "evmdk/atomic_file.h"
#include "evmdk/error.h"
#include "evmdk/host/verify/verify.h"
#include "evmdk/host/verify/verify_progress.h"

namespace evmdk::cli {

namespace {

struct VerifyArgs {
  host::VerifyOptions options;
  std::string digest_algorithm;
  std::string expect;
  std::string write_expect;
  bool json = false;
  bool quiet = false;
};

void run_verify(const VerifyArgs& args) {
  host::VerifyOptions options = args.options;
  if (!args.digest_algorithm.empty()) {
    if (args.digest_algorithm != "sha256") {
      throw Error("verify: --digest {}: only sha256 is supported", args.digest_algorithm);
    }
    options.digest = true;
  }
  if (!args.expect.empty()) options.expect_path = args.expect;
  if (!args.write_expect.empty()) options.digest = true;
  if (args.quiet) options.progress = false;
  host::VerifyReport report = host::verify_disk(options);
  if (!args.write_expect.empty() && report.ok()) {
    write_file_atomic(args.write_expect, host::render_expected_digests(report));
  }
  if (args.quiet) {
    // the exit status alone; problems still go to stderr below
  } else if (args.json) {
    fmt::print("{}\n", report.to_json().dump(2));
  } else {
    for (const auto& layer : report.layers) {
      fmt::print(
          "{} {} at LBA {}{}{}{}{}\n", layer.ok ? "ok  " : "FAIL", layer.name(),
          layer.disk_offset / 512,
          layer.partition ? fmt::format(" partition {} {}", *layer.partition, layer.partuuid) : "",
          layer.erofs_uuid.empty() ? "" : " erofs " + layer.erofs_uuid,
          layer.sha256.empty() ? "" : " sha256 " + layer.sha256,
          layer.verity.empty() ? "" : " dm-verity " + layer.verity);
    }
    double rate = report.seconds > 0 ? static_cast<double>(report.stats.bytes) / report.seconds : 0;
    fmt::print("{}: {} layers, {} read in {:.2f} s ({}/s){}\n", report.ok() ? "verified" : "FAILED",
               report.layers.size(), host::format_bytes(static_cast<double>(report.stats.bytes)),
               report.seconds, host::format_bytes(rate), options.direct ? ", O_DIRECT" : "");
  }
  std::fflush(stdout);
  for (const auto& problem : report.problems)
    fmt::print(stderr, "erofs-vmdk: verify: {}\n", problem);
  if (!report.ok()) throw CLI::RuntimeError(1);
  if (!args.write_expect.empty() && !args.quiet)
    fmt::print(stderr, "wrote expected digests to {}\n", args.write_expect);
}

}  // namespace

void register_verify_commands(CLI::App& app) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Read a composed disk through its descriptor or raw image (io_uring) and check every "
      "layer: EROFS "
      "superblocks, GPT, PARTUUIDs and UUIDs against layout.json, zero gaps, SHA-256 digests");
  verify
      ->add_option("target", args->options.target,
                   "compose output DIR, its disk.vmdk descriptor or its disk.img raw image")
      ->required();
  verify->add_option("--digest", args->digest_algorithm, "compute a per-layer digest (sha256)");
  verify->add_option("--expect", args->expect,
                     "expected digests: JSON {\"<index|path>\": \"<sha256>\"} or sha256sum output "
                     "(implies --digest)");
  verify->add_option(
      "--write-expect", args->write_expect,
      "after a clean run, write the layers' digests as an expect file (implies --digest)");
  verify->add_flag("--direct", args->options.direct, "read with O_DIRECT (bypass the page cache)");
  verify->add_flag("--verity", args->options.check_verity,
                   "recompute each dm-verity protected layer's hash tree and check it against the "
                   "root hash the guest gets");
  verify->add_flag(
      "--trust-descriptor", args->options.trust_descriptor,
      "verify a descriptor that has no layout.json beside it (reads every file it names)");
  verify->add_flag("--json", args->json, "print the report as JSON");
  add_quiet_flag(verify, args->quiet);  // and no progress bar
  verify->add_option("--threads", args->options.threads, "digest threads (default: one per core)");
  verify->add_option("--chunk-size", args->options.chunk_size, "bytes per read (default 4 MiB)");
  verify->add_option("--queue-depth", args->options.queue_depth, "reads in flight (default 8)");
  verify->callback([args] { run_verify(*args); });
}

}  // namespace evmdk::cli
