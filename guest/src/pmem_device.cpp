// Lowers on virtio-pmem: plan rules, device lookup without a serial, and the DAX check.
#include "pmem_device.h"

#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <thread>
#include <vector>

#include "evmdk/contract/markers.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/mountinfo.h"
#include "evmdk/guest/safe_path.h"

namespace fs = std::filesystem;

namespace evmdk::guest::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(20);

bool is_block_device(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

// pmemN names of /sys/block (whole devices; their partitions live below them), at most
// kMaxPmemScan, in name order.
std::vector<std::string> pmem_devices(const std::string& source) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/block", ec)) {
    std::string name = entry.path().filename().string();
    if (name.size() <= 4 || name.compare(0, 4, "pmem") != 0 ||
        !std::all_of(name.begin() + 4, name.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      continue;
    }
    if (names.size() >= kMaxPmemScan) {
      throw Error("storage source '{}': more than {} pmem devices to look at", source,
                  kMaxPmemScan);
    }
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The pmem device whose sysfs path runs through PCI function `address`.
std::vector<std::string> pmem_at_pci_address(const std::string& address,
                                             const std::string& source) {
  std::vector<std::string> found;
  for (const auto& name : pmem_devices(source)) {
    std::error_code ec;
    fs::path real = fs::canonical(fs::path("/sys/block") / name, ec);
    if (ec) continue;
    for (const auto& part : real) {
      if (part == address) {
        found.push_back(name);
        break;
      }
    }
  }
  return found;
}

// Whether /dev/<name> holds what the lower expects: partition N with the PARTUUID, or (a
// whole-device image) an EROFS superblock with the UUID. Unreadable devices do not match.
bool holds_expected(const std::string& name, const LowerPlan& lower) {
  std::string node = "/dev/" + name;
  if (!is_block_device(node)) return false;
  try {
    if (lower.partition) {
      auto table = read_partition_table(node);
      auto entry = table.find(*lower.partition);
      auto expected = option_value(lower.storage->options, marker::kPartUuid);
      return entry != table.end() && expected && same_uuid(entry->second.uuid, *expected);
    }
    auto expected = option_value(lower.storage->options, marker::kErofsUuid);
    return expected && same_uuid(read_erofs_superblock(node).uuid, *expected);
  } catch (const std::exception&) {
    return false;  // no table, no EROFS image, unreadable: not this layer
  }
}

std::string expected_identity(const LowerPlan& lower) {
  if (lower.partition) {
    return fmt::format("partition {} with PARTUUID {}", *lower.partition,
                       option_value(lower.storage->options, marker::kPartUuid).value_or("?"));
  }
  return fmt::format("EROFS UUID {}",
                     option_value(lower.storage->options, marker::kErofsUuid).value_or("?"));
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "none" : out;
}

}  // namespace

void plan_pmem_lower(const std::string& name, LowerPlan& lower) {
  const Storage& storage = *lower.storage;
  bool nvdimm = storage.driver == contract::kPmemDriver;
  bool pmem_source = contract::is_pmem_source(storage.source);
  if (pmem_source && !nvdimm) {
    throw Error("{}: source '{}' is a pmem device, which needs driver '{}', not '{}'", name,
                storage.source, contract::kPmemDriver, storage.driver);
  }
  lower.dax = contract::decode_dax_options(storage.options, name);
  if (!nvdimm) {
    if (lower.dax) {
      throw Error(
          "{}: option {}=always needs a virtio-pmem device (driver '{}'); driver '{}' cannot "
          "do DAX",
          name, marker::kDax, contract::kPmemDriver, storage.driver);
    }
    return;
  }
  try {
    lower.pmem = contract::decode_pmem_source(storage.source);
  } catch (const Error& error) {
    throw_with_context(error, name);
  }
  if (!lower.pmem->pci_address) {
    auto key = lower.partition ? marker::kPartUuid : marker::kErofsUuid;
    if (!option_value(storage.options, key)) {
      throw Error("{}: source {} needs option {}=<uuid>: the scan finds the device by it", name,
                  contract::kPmemScanSource, key);
    }
  }
  if (!lower.dax) return;
  if (lower.verity || !lower.device_verity.empty()) {
    throw Error(
        "{}: option {}=always together with dm-verity ({}) is refused: a dm-verity device "
        "cannot do DAX (the mount would silently read through the page cache); choose DAX "
        "(density, on a host you trust) or dm-verity (integrity, on a host you do not)",
        name, marker::kDax, marker::kDmverityEnabled);
  }
  lower.mount.data += (lower.mount.data.empty() ? "" : ",") + std::string("dax=always");
}

std::string disk_cache_key(const LowerPlan& lower) {
  if (!lower.pmem || lower.pmem->pci_address) return lower.storage->source;
  return lower.storage->source + " " + expected_identity(lower);
}

std::string find_pmem_device(const LowerPlan& lower, std::chrono::milliseconds timeout) {
  const std::string& source = lower.storage->source;
  auto deadline = Clock::now() + timeout;
  while (true) {
    std::vector<std::string> found;
    if (lower.pmem->pci_address) {
      found = pmem_at_pci_address(*lower.pmem->pci_address, source);
    } else {
      for (const auto& name : pmem_devices(source)) {
        if (holds_expected(name, lower)) found.push_back(name);
      }
    }
    if (found.size() > 1) {
      throw Error("storage source '{}': {} pmem devices match ({}); give {}<address>", source,
                  found.size(), joined(found), contract::kPmemPciSourcePrefix);
    }
    if (found.size() == 1 && is_block_device("/dev/" + found.front())) {
      return "/dev/" + found.front();
    }
    if (Clock::now() >= deadline) {
      std::string what =
          lower.pmem->pci_address
              ? fmt::format("no pmem device at PCI address {}", *lower.pmem->pci_address)
              : fmt::format("no pmem device holds {}", expected_identity(lower));
      throw Error("storage source '{}': {} after {} ms (pmem devices seen: {})", source, what,
                  timeout.count(), joined(pmem_devices(source)));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::optional<std::string> check_dax_took_effect(const LowerPlan& lower, const std::string& device,
                                                 const std::string& target) {
  auto id = mount_id_nofollow(target);
  if (!id) throw_errno("cannot read the mount id of {}", target);
  std::string options;
  bool found = false;
  for (const auto& entry : read_mountinfo()) {
    if (entry.id >= 0 && static_cast<uint64_t>(entry.id) == *id) {
      options = entry.super_options;
      found = true;
    }
  }
  if (!found) throw Error("mount {} (id {}) is not in /proc/self/mountinfo", target, *id);
  std::string padded = "," + options + ",";
  if (padded.find(",dax=always,") != std::string::npos) return std::nullopt;
  std::string what = fmt::format(
      "storage #{} '{}': DAX did not take effect on {} mounted at {} (super options '{}'): the "
      "kernel fell back to the page cache (a device without DAX, a partition not 4 KiB "
      "aligned, or a block size other than the page size)",
      lower.storage_number, lower.storage->source, device, target, options);
  if (lower.dax->fallback == contract::DaxFallback::Warn) return what;
  throw Error("{}; {}=error refuses the fallback", what, marker::kDaxFallback);
}

std::string kernel_release() {
  struct utsname name {};
  if (::uname(&name) != 0) throw_errno("uname");
  return name.release;
}

std::optional<std::pair<int, int>> kernel_major_minor(const std::string& release) {
  int major = 0, minor = 0;
  const char* end = release.data() + release.size();
  auto first = std::from_chars(release.data(), end, major);
  if (first.ec != std::errc() || first.ptr == end || *first.ptr != '.') return std::nullopt;
  auto second = std::from_chars(first.ptr + 1, end, minor);
  if (second.ec != std::errc() || second.ptr == first.ptr + 1) return std::nullopt;
  return std::pair{major, minor};
}

bool kernel_has_flat_device_mode(const std::string& release) {
  auto version = kernel_major_minor(release);
  return !version || *version >= kFlatDeviceModeKernel;
}

std::string refuse_or_warn_flat_dax(const LowerPlan& lower, const std::string& device,
                                    const std::string& release, const std::string& why) {
  std::string what = fmt::format(
      "storage #{} '{}': {} holds a multi-device (flat, fsmeta) EROFS image; DAX on one pmem "
      "device needs the kernel's EROFS flat-device mode (Linux {}.{} or later), but {} (guest "
      "kernel {}); the only other way, loop slices passed as device=, cannot do DAX",
      lower.storage_number, lower.storage->source, device, kFlatDeviceModeKernel.first,
      kFlatDeviceModeKernel.second, why, release);
  if (lower.dax && lower.dax->fallback == contract::DaxFallback::Warn) {
    return fmt::format("{}; mounted through loop slices without DAX, as {}=warn allows", what,
                       marker::kDaxFallback);
  }
  throw Error(
      "{}; {}=error refuses that: compose a gpt disk (--mode gpt) for this kernel, or boot a "
      "kernel with flat-device mode",
      what, marker::kDaxFallback);
}

std::string without_dax(const std::string& data) {
  std::string out;
  size_t start = 0;
  while (start <= data.size()) {
    size_t comma = data.find(',', start);
    if (comma == std::string::npos) comma = data.size();
    std::string option = data.substr(start, comma - start);
    if (!option.empty() && option != "dax=always") out += (out.empty() ? "" : ",") + option;
    start = comma + 1;
  }
  return out;
}

}  // namespace evmdk::guest::detail
