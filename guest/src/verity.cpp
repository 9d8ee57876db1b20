#include "evmdk/guest/verity.h"

#include <fcntl.h>
#include <libcryptsetup.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "evmdk/contract/dm_names.h"
#include "evmdk/contract/markers.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest {
namespace {

// libcryptsetup context, freed on scope exit; its log lines are kept for error messages.
class CryptDevice {
 public:
  CryptDevice() = default;
  CryptDevice(const CryptDevice&) = delete;
  CryptDevice& operator=(const CryptDevice&) = delete;
  ~CryptDevice() {
    if (cd_ != nullptr) crypt_free(cd_);
  }
  struct crypt_device** out() {
    return &cd_;
  }
  struct crypt_device* get() const {
    return cd_;
  }
  void capture_log() { crypt_set_log_callback(cd_, &CryptDevice::log, &log_); }
  // "<what>: <strerror> (<libcryptsetup's messages>)".
  std::string explain(int rc) const {
    std::string message = std::strerror(rc < 0 ? -rc : rc);
    if (!log_.empty()) message += fmt::format(" ({})", log_);
    return message;
  }

 private:
  static void log(int level, const char* message, void* user) {
    if (level != CRYPT_LOG_ERROR || message == nullptr) return;
    auto* log = static_cast<std::string*>(user);
    std::string line(message);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return;
    if (!log->empty()) *log += "; ";
    *log += line;
  }
  struct crypt_device* cd_ = nullptr;
  std::string log_;
};

void validate_name(const std::string& name) {
  if (name.empty() || name.size() > contract::kMaxDmNameBytes ||
      name.find('/') != std::string::npos || name == "." || name == "..") {
    throw Error("invalid device-mapper name '{}': 1 to 127 characters, no '/'", name);
  }
}

std::string mapper_path(const std::string& name) { return "/dev/mapper/" + name; }

// The dm-N sysfs directory of device `name`, or empty.
std::string sysfs_dm_dir(const std::string& name) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string base = entry.path().filename().string();
    if (base.rfind("dm-", 0) != 0) continue;
    std::ifstream in(entry.path() / "dm" / "name");
    std::string dm_name;
    if (std::getline(in, dm_name) && dm_name == name) return entry.path().string();
  }
  return {};
}

// libdevmapper creates /dev/mapper/<name> itself when udev is not running (a minimal guest), or
// udev does it shortly after. Wait for it with a bound, and create it from sysfs as a last resort.
void ensure_mapper_node(const std::string& name) {
  std::string path = mapper_path(name);
  for (int attempt = 0; attempt < 100; ++attempt) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string dir = sysfs_dm_dir(name);
  std::ifstream in(dir + "/dev");
  unsigned major_number = 0, minor_number = 0;
  char colon = 0;
  if (dir.empty() || !(in >> major_number >> colon >> minor_number) || colon != ':') {
    throw Error("dm-verity device {} is active but {} did not appear", name, path);
  }
  ::mkdir("/dev/mapper", 0755);
  if (::mknod(path.c_str(), S_IFBLK | 0600, ::makedev(major_number, minor_number)) != 0 &&
      errno != EEXIST) {
    throw_errno("cannot create {}", path);
  }
}

// Reads the first data block through the verity device; the kernel checks it against the tree
// up to the root hash, so a wrong root hash fails here with EIO.
void verify_first_block(const std::string& name, uint32_t data_block_size) {
  std::string path = mapper_path(name);
  UniqueFd fd = open_or_throw(path, O_RDONLY | O_DIRECT);
  size_t size = std::max<uint32_t>(data_block_size, 4096);
  std::unique_ptr<void, decltype(&std::free)> buffer(std::aligned_alloc(4096, size), &std::free);
  if (!buffer) throw Error("out of memory reading {}", path);
  ssize_t n;
  do {
    n = ::pread(fd.get(), buffer.get(), data_block_size, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("reading the first data block through {}", path);
}

void check_matches(std::string_view what, const auto& wanted, const auto& actual,
                   const std::string& name, std::string_view key) {
  if (wanted && *wanted != actual) {
    throw Error("dm-verity {}: option {}={} disagrees with the superblock's {} {}", name, key,
                *wanted, what, actual);
  }
}

}  // namespace

bool device_mapper_available() {
  std::ifstream misc("/proc/misc");
  std::string line;
  while (std::getline(misc, line)) {
    if (line.find("device-mapper") != std::string::npos) return true;
  }
  return false;
}

VerityDevice::VerityDevice(VerityDevice&& other) noexcept : name_(std::exchange(other.name_, {})) {}

VerityDevice& VerityDevice::operator=(VerityDevice&& other) noexcept {
  if (this != &other) {
    if (active()) {
      try {
        remove();
      } catch (...) {}
    }
    name_ = std::exchange(other.name_, {});
  }
  return *this;
}

VerityDevice::~VerityDevice() {
  if (!active()) return;
  try {
    remove();
  } catch (...) {
    // Still in use (mounted): the owner should have unmounted first; remove() reports it.
  }
}

std::string VerityDevice::path() const { return mapper_path(name_); }

uint64_t VerityDevice::verify_all() const {
  if (!active()) throw Error("verify_all on an empty VerityDevice");
  std::string device = path();
  UniqueFd fd = open_or_throw(device, O_RDONLY | O_DIRECT);
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<void, decltype(&std::free)> buffer(std::aligned_alloc(4096, kChunk), &std::free);
  if (!buffer) throw Error("out of memory reading {}", device);
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd.get(), buffer.get(), kChunk, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      // Narrow the failure down to the first bad 4 KiB block of this chunk for the message.
      uint64_t bad = offset;
      for (; bad < offset + kChunk; bad += 4096) {
        if (::pread(fd.get(), buffer.get(), 4096, static_cast<off_t>(bad)) < 0) break;
      }
      throw_errno_message(saved, fmt::format("dm-verity {}: data fails verification at byte {} "
                                             "(4096-byte block {})",
                                             name_, bad, bad / 4096));
    }
    if (n == 0) return offset;
    offset += static_cast<uint64_t>(n);
  }
}

std::string VerityDevice::release() { return std::exchange(name_, {}); }

void VerityDevice::remove() {
  if (!active()) return;
  remove_verity_device(name_);
  name_.clear();
}

namespace {

// Loads the tree's own superblock at hash_offset; every parameter the options give must agree
// with it. Returns the data block size.
uint32_t load_superblock(CryptDevice& cd, const std::string& name, const std::string& where,
                         const VerityParams& params, const VerityAlgorithmCheck& check_algorithm) {
  struct crypt_params_verity verity {};
  verity.hash_area_offset = params.hash_offset;
  int rc = crypt_load(cd.get(), CRYPT_VERITY, &verity);
  if (rc < 0) {
    throw Error("{}: no valid dm-verity superblock at offset {}: {}", where, params.hash_offset,
                cd.explain(rc));
  }
  struct crypt_params_verity loaded {};
  rc = crypt_get_verity_info(cd.get(), &loaded);
  if (rc < 0)
    throw Error("{}: cannot read the loaded verity parameters: {}", where, cd.explain(rc));
  std::string algorithm = loaded.hash_name ? loaded.hash_name : "";
  check_matches("data block size", params.data_block_size, loaded.data_block_size, name,
                marker::kDmverityBlocksize);
  check_matches("hash block size", params.hash_block_size, loaded.hash_block_size, name,
                marker::kDmverityHashsize);
  check_matches("hash algorithm", params.algorithm, algorithm, name, marker::kDmverityAlgorithm);
  check_matches("hash type", params.hash_type, loaded.hash_type, name, marker::kDmverityHashtype);
  if (params.salt) {
    std::string actual = to_hex(loaded.salt, loaded.salt_size);
    if (*params.salt != actual) {
      throw Error("dm-verity {}: option {}={} disagrees with the superblock's salt {}", name,
                  marker::kDmveritySalt, params.salt->empty() ? "-" : *params.salt,
                  actual.empty() ? "-" : actual);
    }
  }
  // The policy applies to what the tree really uses, not to what the options claim.
  if (check_algorithm) check_algorithm(algorithm, where);
  return loaded.data_block_size;
}

// No superblock: the tree starts at hash_offset and every parameter comes from the options
// (defaults: sha256, 4096/4096, hash type 1, no salt). Returns the data block size.
uint32_t format_without_superblock(CryptDevice& cd, const std::string& data_device,
                                   const std::string& where, const VerityParams& params,
                                   const VerityAlgorithmCheck& check_algorithm) {
  std::string algorithm = params.algorithm.value_or("sha256");
  if (check_algorithm) check_algorithm(algorithm, where);
  std::vector<uint8_t> salt = from_hex(params.salt.value_or(""), where + ": salt");
  struct crypt_params_verity verity {};
  verity.hash_name = algorithm.c_str();
  verity.data_device = data_device.c_str();
  verity.salt = reinterpret_cast<const char*>(salt.data());
  verity.salt_size = static_cast<uint32_t>(salt.size());
  verity.hash_type = params.hash_type.value_or(1);
  verity.data_block_size = params.data_block_size.value_or(4096);
  verity.hash_block_size = params.hash_block_size.value_or(4096);
  verity.data_size = params.hash_offset / verity.data_block_size;
  verity.hash_area_offset = params.hash_offset;
  verity.flags = CRYPT_VERITY_NO_HEADER;
  int rc = crypt_format(cd.get(), CRYPT_VERITY, nullptr, nullptr, nullptr, nullptr, 0, &verity);
  if (rc < 0) throw Error("{}: invalid verity parameters: {}", where, cd.explain(rc));
  return verity.data_block_size;
}

// Activates the loaded or formatted mapping read-only under its root hash.
void activate_read_only(CryptDevice& cd, const std::string& name, const std::string& where,
                        const VerityParams& params) {
  int digest_size = crypt_get_volume_key_size(cd.get());
  if (digest_size > 0 && params.root_hash.size() != static_cast<size_t>(digest_size) * 2) {
    throw Error("{}: root hash {} has {} hex digits, the algorithm needs {}", where,
                params.root_hash, params.root_hash.size(), digest_size * 2);
  }
  std::vector<uint8_t> root = from_hex(params.root_hash, where + ": root hash");
  int rc = crypt_activate_by_volume_key(cd.get(), name.c_str(),
                                        reinterpret_cast<const char*>(root.data()), root.size(),
                                        CRYPT_ACTIVATE_READONLY);
  if (rc < 0) throw Error("{}: activation failed: {}", where, cd.explain(rc));
}

}  // namespace

VerityDevice VerityDevice::activate(const std::string& name, const std::string& data_device,
                                    const std::string& hash_device, const VerityParams& params,
                                    const VerityAlgorithmCheck& check_algorithm) {
  validate_name(name);
  std::string where = fmt::format("dm-verity {} (data {}, hash {} at offset {})", name, data_device,
                                  hash_device, params.hash_offset);
  if (!device_mapper_available()) {
    throw Error("{}: the kernel has no device-mapper (load dm-mod and dm-verity)", where);
  }
  if (verity_device_exists(name))
    throw Error("{}: a device-mapper device with this name already exists", where);

  CryptDevice cd;
  int rc = crypt_init_data_device(cd.out(), hash_device.c_str(), data_device.c_str());
  if (rc < 0) throw Error("{}: cannot open the devices: {}", where, std::strerror(-rc));
  cd.capture_log();
  uint32_t data_block_size =
      params.no_superblock
          ? format_without_superblock(cd, data_device, where, params, check_algorithm)
          : load_superblock(cd, name, where, params, check_algorithm);
  activate_read_only(cd, name, where, params);

  VerityDevice device(name);
  ensure_mapper_node(name);
  try {
    verify_first_block(name, data_block_size);
  } catch (const std::exception& error) {
    device.remove();
    throw Error(
        "{}: the root hash {} does not verify the data (wrong root hash or corrupted "
        "layer): {}",
        where, params.root_hash, error.what());
  }
  return device;
}

bool verity_device_exists(const std::string& name) {
  if (!device_mapper_available()) return false;
  crypt_status_info status = crypt_status(nullptr, name.c_str());
  return status == CRYPT_ACTIVE || status == CRYPT_BUSY;
}

std::optional<bool> verity_device_corrupted(const std::string& name) {
  validate_name(name);
  if (!verity_device_exists(name)) return std::nullopt;
  CryptDevice cd;
  int rc = crypt_init_by_name(cd.out(), name.c_str());
  if (rc < 0) throw Error("dm-verity {}: cannot open: {}", name, std::strerror(-rc));
  cd.capture_log();
  struct crypt_active_device active {};
  rc = crypt_get_active_device(cd.get(), name.c_str(), &active);
  if (rc < 0) throw Error("dm-verity {}: cannot read its status: {}", name, cd.explain(rc));
  return (active.flags & CRYPT_ACTIVATE_CORRUPTED) != 0;
}

bool remove_verity_device(const std::string& name) {
  validate_name(name);
  if (!verity_device_exists(name)) return false;
  CryptDevice cd;
  int rc = crypt_init_by_name(cd.out(), name.c_str());
  if (rc < 0) throw Error("dm-verity {}: cannot open for removal: {}", name, std::strerror(-rc));
  cd.capture_log();
  // The kernel may hold the device briefly after an unmount (e.g. a pending lazy release);
  // retry EBUSY a few times before reporting it.
  for (int attempt = 0;; ++attempt) {
    rc = crypt_deactivate(cd.get(), name.c_str());
    if (rc >= 0 || rc == -ENODEV) break;
    if (rc != -EBUSY || attempt >= 10) {
      throw Error("dm-verity {}: cannot remove {}: {}", name, mapper_path(name), cd.explain(rc));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // libdevmapper removes the node itself without udev; make sure no stale node stays.
  ::unlink(mapper_path(name).c_str());
  return true;
}

std::vector<std::string> device_mapper_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    if (entry.path().filename().string().rfind("dm-", 0) != 0) continue;
    std::ifstream in(entry.path() / "dm" / "name");
    std::string name;
    if (std::getline(in, name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace evmdk::guest
