#include "evmdk/guest/verity.h"

#include <fcntl.h>
#include <libcryptsetup.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "evmdk/error.h"
#include "evmdk/storage_spec.h"
#include "evmdk/unique_fd.h"

namespace evmdk::guest {
namespace {

constexpr std::string_view kDmverityPrefix = "X-kata.dmverity.";

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool is_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return std::isxdigit(c) != 0; });
}

std::vector<char> hex_to_bytes(std::string_view hex) {
  std::vector<char> out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    unsigned value = 0;
    std::from_chars(hex.data() + i, hex.data() + i + 2, value, 16);
    out.push_back(static_cast<char>(value));
  }
  return out;
}

std::string bytes_to_hex(const char* data, size_t size) {
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) out += fmt::format("{:02x}", static_cast<unsigned char>(data[i]));
  return out;
}

// The single value of `key`; a repeated key is ambiguous and refused.
std::optional<std::string> single_value(const std::vector<std::string>& options,
                                        std::string_view key, std::string_view context) {
  auto values = option_values(options, key);
  if (values.size() > 1) throw Error("{}: option {} given {} times", context, key, values.size());
  if (values.empty()) {
    if (has_option(options, key)) throw Error("{}: option {} needs a value ({}=...)", context, key, key);
    return std::nullopt;
  }
  return values.front();
}

uint64_t parse_u64(std::string_view value, std::string_view key, std::string_view context) {
  uint64_t out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out, 10);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    throw Error("{}: option {}={} is not a decimal number", context, key, value);
  }
  return out;
}

uint32_t parse_block_size(std::string_view value, std::string_view key, std::string_view context) {
  uint64_t size = parse_u64(value, key, context);
  if (size < 512 || size > (1u << 20) || (size & (size - 1)) != 0) {
    throw Error("{}: option {}={} must be a power of two between 512 and 1048576", context, key,
                value);
  }
  return static_cast<uint32_t>(size);
}

bool parse_bool(std::string_view value, std::string_view key, std::string_view context) {
  std::string v = lower(value);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw Error("{}: option {}={} must be true or false", context, key, value);
}

// libcryptsetup context, freed on scope exit; its log lines are kept for error messages.
class CryptDevice {
 public:
  CryptDevice() = default;
  CryptDevice(const CryptDevice&) = delete;
  CryptDevice& operator=(const CryptDevice&) = delete;
  ~CryptDevice() {
    if (cd_ != nullptr) crypt_free(cd_);
  }
  struct crypt_device** out() { return &cd_; }
  struct crypt_device* get() const { return cd_; }
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
  if (name.empty() || name.size() > 127 || name.find('/') != std::string::npos || name == "." ||
      name == "..") {
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
    struct stat st{};
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

std::string normalized_salt(const std::string& salt) {
  return (salt == "-") ? std::string() : lower(salt);
}

}  // namespace

std::optional<VerityParams> verity_params_from_options(const std::vector<std::string>& options,
                                                       std::string_view context) {
  bool any_dmverity_key = false;
  for (const auto& option : options) {
    std::string_view key = std::string_view(option).substr(0, option.find('='));
    if (key.rfind(kDmverityPrefix, 0) != 0) continue;
    any_dmverity_key = true;
    static constexpr std::string_view kKnown[] = {
        marker::kDmverityRoothash,  marker::kDmverityHashoffset, marker::kDmverityBlocksize,
        marker::kDmverityHashsize,  marker::kDmverityAlgorithm,  marker::kDmveritySalt,
        marker::kDmverityHashtype,  marker::kDmverityNoSuperblock};
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      throw Error("{}: unknown dm-verity option {}", context, key);
    }
  }
  auto enabled_value = single_value(options, marker::kDmverityEnabled, context);
  bool enabled = enabled_value && parse_bool(*enabled_value, marker::kDmverityEnabled, context);
  if (!enabled) {
    if (enabled_value && any_dmverity_key) {
      throw Error("{}: {}={} but X-kata.dmverity.* options are present; refusing to mount "
                  "a layer meant to be protected without dm-verity",
                  context, marker::kDmverityEnabled, *enabled_value);
    }
    if (!enabled_value && !any_dmverity_key) return std::nullopt;
    if (enabled_value) return std::nullopt;
    // dmverity.* options without the enable marker: the host meant protection.
  }

  VerityParams params;
  auto root_hash = single_value(options, marker::kDmverityRoothash, context);
  if (!root_hash) throw Error("{}: dm-verity enabled but option {} is missing", context, marker::kDmverityRoothash);
  if (root_hash->empty() || root_hash->size() % 2 != 0 || !is_hex(*root_hash)) {
    throw Error("{}: option {}={} is not an even-length hex string", context,
                marker::kDmverityRoothash, *root_hash);
  }
  params.root_hash = lower(*root_hash);

  auto hash_offset = single_value(options, marker::kDmverityHashoffset, context);
  if (!hash_offset) {
    throw Error("{}: dm-verity enabled but option {} is missing", context, marker::kDmverityHashoffset);
  }
  params.hash_offset = parse_u64(*hash_offset, marker::kDmverityHashoffset, context);
  if (params.hash_offset % 512 != 0) {
    throw Error("{}: option {}={} is not a multiple of 512", context, marker::kDmverityHashoffset,
                *hash_offset);
  }

  if (auto v = single_value(options, marker::kDmverityBlocksize, context)) {
    params.data_block_size = parse_block_size(*v, marker::kDmverityBlocksize, context);
  }
  if (auto v = single_value(options, marker::kDmverityHashsize, context)) {
    params.hash_block_size = parse_block_size(*v, marker::kDmverityHashsize, context);
  }
  if (auto v = single_value(options, marker::kDmverityAlgorithm, context)) {
    if (v->empty() || v->size() > 31 ||
        !std::all_of(v->begin(), v->end(), [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; })) {
      throw Error("{}: option {}={} is not a hash algorithm name", context,
                  marker::kDmverityAlgorithm, *v);
    }
    params.algorithm = lower(*v);
  }
  if (auto v = single_value(options, marker::kDmveritySalt, context)) {
    std::string salt = normalized_salt(*v);
    if (salt.size() % 2 != 0 || !is_hex(salt) || salt.size() > 512) {
      throw Error("{}: option {}={} is not a hex string of at most 256 bytes (or '-')", context,
                  marker::kDmveritySalt, *v);
    }
    params.salt = salt;
  } else if (has_option(options, marker::kDmveritySalt)) {
    params.salt = std::string();  // "X-kata.dmverity.salt=" : explicitly no salt
  }
  if (auto v = single_value(options, marker::kDmverityHashtype, context)) {
    uint64_t type = parse_u64(*v, marker::kDmverityHashtype, context);
    if (type > 1) throw Error("{}: option {}={} must be 0 or 1", context, marker::kDmverityHashtype, *v);
    params.hash_type = static_cast<uint32_t>(type);
  }
  if (has_option(options, marker::kDmverityNoSuperblock)) {
    auto v = option_value(options, marker::kDmverityNoSuperblock);
    params.no_superblock = !v || parse_bool(*v, marker::kDmverityNoSuperblock, context);
  }
  if (params.no_superblock && params.hash_offset == 0) {
    throw Error("{}: {} needs {} > 0: the data area is the bytes before the hash tree", context,
                marker::kDmverityNoSuperblock, marker::kDmverityHashoffset);
  }
  return params;
}

std::vector<std::string> verity_options(const VerityParams& params) {
  std::vector<std::string> out;
  out.push_back(fmt::format("{}=true", marker::kDmverityEnabled));
  out.push_back(fmt::format("{}={}", marker::kDmverityRoothash, params.root_hash));
  out.push_back(fmt::format("{}={}", marker::kDmverityHashoffset, params.hash_offset));
  if (params.data_block_size) out.push_back(fmt::format("{}={}", marker::kDmverityBlocksize, *params.data_block_size));
  if (params.hash_block_size) out.push_back(fmt::format("{}={}", marker::kDmverityHashsize, *params.hash_block_size));
  if (params.algorithm) out.push_back(fmt::format("{}={}", marker::kDmverityAlgorithm, *params.algorithm));
  if (params.salt) out.push_back(fmt::format("{}={}", marker::kDmveritySalt, params.salt->empty() ? "-" : *params.salt));
  if (params.hash_type) out.push_back(fmt::format("{}={}", marker::kDmverityHashtype, *params.hash_type));
  if (params.no_superblock) out.push_back(fmt::format("{}=true", marker::kDmverityNoSuperblock));
  return out;
}

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
      } catch (...) {
      }
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
  struct crypt_params_verity verity{};
  verity.hash_area_offset = params.hash_offset;
  int rc = crypt_load(cd.get(), CRYPT_VERITY, &verity);
  if (rc < 0) {
    throw Error("{}: no valid dm-verity superblock at offset {}: {}", where, params.hash_offset,
                cd.explain(rc));
  }
  struct crypt_params_verity loaded{};
  rc = crypt_get_verity_info(cd.get(), &loaded);
  if (rc < 0) throw Error("{}: cannot read the loaded verity parameters: {}", where, cd.explain(rc));
  std::string algorithm = loaded.hash_name ? loaded.hash_name : "";
  check_matches("data block size", params.data_block_size, loaded.data_block_size, name, marker::kDmverityBlocksize);
  check_matches("hash block size", params.hash_block_size, loaded.hash_block_size, name, marker::kDmverityHashsize);
  check_matches("hash algorithm", params.algorithm, algorithm, name, marker::kDmverityAlgorithm);
  check_matches("hash type", params.hash_type, loaded.hash_type, name, marker::kDmverityHashtype);
  if (params.salt) {
    std::string actual = bytes_to_hex(loaded.salt, loaded.salt_size);
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
  std::vector<char> salt = hex_to_bytes(params.salt.value_or(""));
  struct crypt_params_verity verity{};
  verity.hash_name = algorithm.c_str();
  verity.data_device = data_device.c_str();
  verity.salt = salt.data();
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
  std::vector<char> root = hex_to_bytes(params.root_hash);
  int rc = crypt_activate_by_volume_key(cd.get(), name.c_str(), root.data(), root.size(),
                                        CRYPT_ACTIVATE_READONLY);
  if (rc < 0) throw Error("{}: activation failed: {}", where, cd.explain(rc));
}

}  // namespace

VerityDevice VerityDevice::activate(const std::string& name, const std::string& data_device,
                                    const std::string& hash_device, const VerityParams& params,
                                    const VerityAlgorithmCheck& check_algorithm) {
  validate_name(name);
  std::string where = fmt::format("dm-verity {} (data {}, hash {} at offset {})", name,
                                  data_device, hash_device, params.hash_offset);
  if (!device_mapper_available()) {
    throw Error("{}: the kernel has no device-mapper (load dm-mod and dm-verity)", where);
  }
  if (verity_device_exists(name)) throw Error("{}: a device-mapper device with this name already exists", where);

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
    throw Error("{}: the root hash {} does not verify the data (wrong root hash or corrupted "
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
