// `erofs-vmdk verity ...`: host side (format, show) and guest side (open, close, list).
#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "commands.h"
#include "evmdk/error.h"
#include "evmdk/guest/verity.h"
#include "evmdk/host/verify/verify_progress.h"
#include "evmdk/host/verity/verity.h"

namespace evmdk::cli {
namespace {

nlohmann::json describe(const host::VeritySidecar& sidecar, const host::VeritySuperblock& sb,
                        uint64_t hash_end) {
  return {{"roothash", sidecar.root_hash},
          {"hashoffset", sidecar.hash_offset},
          {"hash_end", hash_end},
          {"uuid", host::format_uuid(sb.uuid)},
          {"hash_type", sb.hash_type},
          {"algorithm", sb.algorithm},
          {"data_block_size", sb.data_block_size},
          {"hash_block_size", sb.hash_block_size},
          {"data_blocks", sb.data_blocks},
          {"salt", sb.salt.empty() ? std::string("-") : host::to_hex(sb.salt)}};
}

// Bytes this process has read so far: /proc/self/io "rchar" counts every read(2)/pread(2) of
// every thread, page cache hits included.
std::optional<uint64_t> bytes_read_so_far() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  return std::nullopt;
}

// A progress bar on a terminal for a library call that reads `total` bytes of data but reports
// no progress of its own (verity_format hashes the whole data area once): a thread samples
// the process's read counter. Draws nothing when stderr is not a terminal.
class ReadProgress {
 public:
  ReadProgress(std::string label, uint64_t total, bool wanted)
      : bar_(host::ProgressBar::for_stderr(std::move(label), total)), start_(bytes_read_so_far()) {
    if (!wanted || !bar_.enabled() || !start_) return;
    sampler_ = std::jthread([this, total](std::stop_token stop) {
      std::mutex mutex;
      std::condition_variable_any wake;
      std::unique_lock lock(mutex);
      // wait_for returns early (false, like a timeout) once a stop is requested.
      while (!stop.stop_requested()) {
        wake.wait_for(lock, stop, std::chrono::milliseconds(100), [] { return false; });
        if (stop.stop_requested()) break;
        if (auto now = bytes_read_so_far()) bar_.update(std::min(total, *now - *start_));
      }
    });
  }
  // Stops sampling; the bar shows the finished state.
  void finish() {
    if (!sampler_.joinable()) return;
    sampler_.request_stop();
    sampler_.join();
    bar_.finish();
  }
  ~ReadProgress() {
    if (sampler_.joinable()) {
      sampler_.request_stop();
      sampler_.join();
    }
  }

 private:
  host::ProgressBar bar_;
  std::optional<uint64_t> start_;
  std::jthread sampler_;
};

void print_description(const nlohmann::json& d) {
  fmt::print("root hash:       {}\n", d["roothash"].get<std::string>());
  fmt::print("hash offset:     {}\n", d["hashoffset"].get<uint64_t>());
  fmt::print("hash end:        {}\n", d["hash_end"].get<uint64_t>());
  fmt::print("uuid:            {}\n", d["uuid"].get<std::string>());
  fmt::print("hash type:       {}\n", d["hash_type"].get<uint32_t>());
  fmt::print("algorithm:       {}\n", d["algorithm"].get<std::string>());
  fmt::print("data block size: {}\n", d["data_block_size"].get<uint32_t>());
  fmt::print("hash block size: {}\n", d["hash_block_size"].get<uint32_t>());
  fmt::print("data blocks:     {}\n", d["data_blocks"].get<uint64_t>());
  fmt::print("salt:            {}\n", d["salt"].get<std::string>());
}

}  // namespace

void register_verity_commands(CLI::App& app) {
  auto* verity =
      app.add_subcommand("verity", "dm-verity: protect layers (host), open them (guest)");
  verity->require_subcommand(1);

  // -- format
  struct FormatArgs {
    std::string layer;
    std::optional<uint64_t> hash_offset;
    std::string salt = std::string(64, '0');
    std::string uuid;
    std::string algorithm = "sha256";
    uint32_t data_block_size = 4096;
    uint32_t hash_block_size = 4096;
    uint32_t hash_type = 1;
    unsigned threads = 0;
    bool no_sidecar = false;
    bool force = false;
    bool json = false;
    bool quiet = false;
  };
  auto format_args = std::make_shared<FormatArgs>();
  auto* format = verity->add_subcommand(
      "format",
      "append a dm-verity hash tree to LAYER and write LAYER.dmverity (as containerd "
      "does; bit-identical to `veritysetup format` with the same parameters)");
  format->add_option("LAYER", format_args->layer, "layer.erofs to protect")->required();
  format->add_option("--hash-offset", format_args->hash_offset,
                     "byte offset of the superblock and tree (default: the EROFS image size)");
  format->add_option("--salt", format_args->salt,
                     "salt as hex, '-' for none (default: 32 zero bytes)");
  format->add_option("--uuid", format_args->uuid, "superblock UUID (default: random)");
  format->add_option("--hash", format_args->algorithm, "hash algorithm (sha256, sha512)");
  format->add_option("--data-block-size", format_args->data_block_size, "bytes");
  format->add_option("--hash-block-size", format_args->hash_block_size, "bytes");
  format->add_option("--format", format_args->hash_type, "hash type: 1 (default) or 0");
  format->add_option("--threads", format_args->threads, "hashing threads (default: one per core)");
  format->add_flag("--no-sidecar", format_args->no_sidecar, "do not write LAYER.dmverity");
  format->add_flag("--force", format_args->force, "re-format a layer that already has a sidecar");
  format->add_flag("--json", format_args->json, "print the result as JSON");
  add_quiet_flag(format, format_args->quiet);  // and no progress bar
  format->callback([format_args] {
    host::VerityFormatOptions options;
    options.hash_offset = format_args->hash_offset;
    options.salt = format_args->salt == "-" ? std::vector<uint8_t>{}
                                            : host::from_hex(format_args->salt, "--salt");
    if (!format_args->uuid.empty()) options.uuid = host::parse_uuid(format_args->uuid);
    options.algorithm = format_args->algorithm;
    options.data_block_size = format_args->data_block_size;
    options.hash_block_size = format_args->hash_block_size;
    options.hash_type = format_args->hash_type;
    options.threads = format_args->threads;
    options.write_sidecar = !format_args->no_sidecar;
    options.force = format_args->force;
    // The data area is at most the file as it is now (a re-format also reads an old tree).
    std::error_code size_error;
    uint64_t data_bytes = std::filesystem::file_size(format_args->layer, size_error);
    ReadProgress progress("verity format", size_error ? 0 : data_bytes,
                          !format_args->quiet && !size_error);
    auto result = host::verity_format(format_args->layer, options);
    progress.finish();
    auto d = describe(result.sidecar, result.superblock, result.file_size);
    if (format_args->quiet) return;
    if (format_args->json) {
      fmt::print("{}\n", d.dump(2));
    } else {
      print_description(d);
    }
  });

  // -- show
  struct ShowArgs {
    std::string layer;
    bool check = false;
    bool json = false;
  };
  auto show_args = std::make_shared<ShowArgs>();
  auto* show = verity->add_subcommand(
      "show", "print LAYER's dm-verity sidecar and superblock, after cross-checking them");
  show->add_option("LAYER", show_args->layer, "layer.erofs")->required();
  show->add_flag("--check", show_args->check,
                 "also recompute the whole tree from the data and compare it with the stored one");
  show->add_flag("--json", show_args->json, "print JSON");
  show->callback([show_args] {
    auto info = host::inspect_verity_layer(show_args->layer);
    if (!info) {
      throw Error("layer {} has no dm-verity data ({} not found)", show_args->layer,
                  host::verity_sidecar_path(show_args->layer));
    }
    auto d = describe(info->sidecar, info->superblock, info->hash_end);
    if (show_args->check) {
      auto check =
          host::verity_check_tree(show_args->layer, info->sidecar.hash_offset, info->superblock);
      if (check.root_hash != info->sidecar.root_hash) {
        throw Error("layer {}: data does not match the root hash {} (recomputed {})",
                    show_args->layer, info->sidecar.root_hash, check.root_hash);
      }
      if (check.first_bad_tree_byte) {
        throw Error(
            "layer {}: the stored hash tree differs from the one its data gives, at byte "
            "{} (dm-verity would fail reads that need that tree block)",
            show_args->layer, *check.first_bad_tree_byte);
      }
      d["checked"] = true;
    }
    if (show_args->json) {
      fmt::print("{}\n", d.dump(2));
    } else {
      print_description(d);
      if (show_args->check) fmt::print("data:            verified\n");
    }
  });

  // -- open / close / list (guest side; the mount flow uses the library directly)
  struct OpenArgs {
    std::string name;
    std::string data_device;
    std::string hash_device;
    std::vector<std::string> options;
    bool json = false;
    bool quiet = false;
  };
  auto open_args = std::make_shared<OpenArgs>();
  auto* open = verity->add_subcommand(
      "open", "activate /dev/mapper/NAME over DEVICE from Storage-style X-kata.dmverity.* options");
  open->add_option("NAME", open_args->name, "device-mapper name")->required();
  open->add_option("DEVICE", open_args->data_device, "data device (the layer)")->required();
  open->add_option("--hash-device", open_args->hash_device, "hash device (default: DEVICE)");
  open->add_option("-o,--option", open_args->options, "X-kata.dmverity.* option (repeatable)")
      ->required();
  open->add_flag("--json", open_args->json, "print {\"name\", \"path\"} as JSON");
  add_quiet_flag(open, open_args->quiet);
  open->callback([open_args] {
    auto params = guest::verity_params_from_options(open_args->options, open_args->data_device);
    if (!params) throw Error("{}: the options do not enable dm-verity", open_args->data_device);
    auto device = guest::VerityDevice::activate(
        open_args->name, open_args->data_device,
        open_args->hash_device.empty() ? open_args->data_device : open_args->hash_device, *params);
    if (open_args->json) {
      fmt::print("{}\n",
                 nlohmann::json{{"name", open_args->name}, {"path", device.path()}}.dump(2));
    } else if (!open_args->quiet) {
      fmt::print("{}\n", device.path());
    }
    device.release();  // stays active until `verity close`
  });

  auto check_args = std::make_shared<OpenArgs>();
  auto* check = verity->add_subcommand(
      "check",
      "activate dm-verity over DEVICE, read all of it through the kernel's verification, "
      "and remove the device again; fails naming the first corrupted block");
  check->add_option("NAME", check_args->name, "device-mapper name (temporary)")->required();
  check->add_option("DEVICE", check_args->data_device, "data device (the layer)")->required();
  check->add_option("--hash-device", check_args->hash_device, "hash device (default: DEVICE)");
  check->add_option("-o,--option", check_args->options, "X-kata.dmverity.* option (repeatable)")
      ->required();
  check->add_flag("--json", check_args->json, "print {\"device\", \"bytes_verified\"} as JSON");
  add_quiet_flag(check, check_args->quiet);
  check->callback([check_args] {
    auto params = guest::verity_params_from_options(check_args->options, check_args->data_device);
    if (!params) throw Error("{}: the options do not enable dm-verity", check_args->data_device);
    auto device = guest::VerityDevice::activate(
        check_args->name, check_args->data_device,
        check_args->hash_device.empty() ? check_args->data_device : check_args->hash_device,
        *params);
    uint64_t bytes = device.verify_all();  // the device is removed on every path
    if (check_args->json) {
      fmt::print(
          "{}\n",
          nlohmann::json{{"device", check_args->data_device}, {"bytes_verified", bytes}}.dump(2));
    } else if (!check_args->quiet) {
      fmt::print("{}: {} bytes verified\n", check_args->data_device, bytes);
    }
  });

  auto close_name = std::make_shared<std::string>();
  auto* close = verity->add_subcommand("close", "remove dm-verity device NAME");
  close->add_option("NAME", *close_name, "device-mapper name")->required();
  close->callback([close_name] {
    if (!guest::remove_verity_device(*close_name)) {
      throw Error("no device-mapper device named {}", *close_name);
    }
  });

  auto* list = verity->add_subcommand("list", "list device-mapper devices");
  auto list_json = std::make_shared<bool>(false);
  list->add_flag("--json", *list_json, "print the names as a JSON array");
  list->callback([list_json] {
    auto names = guest::device_mapper_names();
    if (*list_json) {
      fmt::print("{}\n", nlohmann::json(names).dump(2));
      return;
    }
    for (const auto& name : names) fmt::print("{}\n", name);
  });
}

}  // namespace evmdk::cli
