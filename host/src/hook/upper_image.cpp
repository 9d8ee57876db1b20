#include "upper_image.h"

#include <blkid/blkid.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "evmdk/blkid_ptr.h"
#include "evmdk/error.h"
#include "evmdk/process.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host::hook_detail {

namespace fs = std::filesystem;

// libblkid's view of a file: TYPE, or empty when it finds no filesystem.
std::string blkid_type(const std::string& path) {
  BlkidProbePtr probe(blkid_new_probe_from_filename(path.c_str()));
  if (!probe) throw Error("{}: libblkid cannot open it", path);
  blkid_probe_enable_superblocks(probe.get(), 1);
  blkid_probe_set_superblocks_flags(probe.get(), BLKID_SUBLKS_TYPE);
  if (blkid_do_safeprobe(probe.get()) != 0) return {};
  const char* type = nullptr;
  if (blkid_probe_lookup_value(probe.get(), "TYPE", &type, nullptr) != 0 || type == nullptr)
    return {};
  return type;
}

NewExt4Image::NewExt4Image(const std::string& final_path, uint64_t size,
                           const std::vector<contract::MkdirSpec>& directories)
    : final_path_(final_path) {
  fs::path target(final_path);
  std::string pattern =
      (target.parent_path() / ("." + target.filename().string() + ".evmdk-XXXXXX")).string();
  UniqueFd fd(::mkstemp(pattern.data()));
  if (!fd) throw_errno("cannot create the upper image next to {}", final_path);
  temp_path_ = pattern;
  if (::fchmod(fd.get(), 0600) != 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    int saved = errno;
    ::unlink(temp_path_.c_str());
    throw_errno_message(
        saved, fmt::format("cannot size the upper image {} to {} bytes", final_path, size));
  }
  fd.reset();
  ProcessResult mkfs;
  try {
    std::vector<std::string> argv{"mkfs.ext4", "-q"};
    if (!directories.empty()) {
      staging_ = temp_path_ + ".d";
      make_staging_tree(directories);
      argv.insert(argv.end(), {"-d", staging_});
    }
    argv.push_back(temp_path_);
    mkfs = run_process(argv);
    remove_staging_tree();
  } catch (...) {
    remove_staging_tree();
    ::unlink(temp_path_.c_str());
    throw;
  }
  if (mkfs.exit_code != 0) {
    ::unlink(temp_path_.c_str());
    throw Error("mkfs.ext4 of the upper {} failed (exit {}): {}", final_path, mkfs.exit_code,
                mkfs.err.empty() ? mkfs.out : mkfs.err);
  }
}

NewExt4Image::~NewExt4Image() {
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  if (published_ && !kept_) ::unlink(final_path_.c_str());
}

void NewExt4Image::publish() {
  if (::link(temp_path_.c_str(), final_path_.c_str()) != 0) {
    throw_errno("cannot create the upper image {}", final_path_);
  }
  published_ = true;
  ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

// The directories as the guest's mkdir directives would make them: each component created
// with exactly the mode, and uid:gid when given.
void NewExt4Image::make_staging_tree(const std::vector<contract::MkdirSpec>& directories) {
  if (::mkdir(staging_.c_str(), 0700) != 0) throw_errno("cannot create {}", staging_);
  if (::chmod(staging_.c_str(), 0755) != 0) throw_errno("cannot chmod {}", staging_);
  for (const auto& directory : directories) {
    fs::path path = staging_;
    for (const auto& component : fs::path(directory.path)) {
      path /= component;
      if (::mkdir(path.c_str(), 0700) != 0) {
        if (errno == EEXIST) continue;  // made by an earlier directive: left as it is
        throw_errno("cannot create {} for the read-only upper", path.string());
      }
      if (::chmod(path.c_str(), static_cast<mode_t>(directory.mode)) != 0) {
        throw_errno("cannot chmod {}", path.string());
      }
      if (directory.uid && ::chown(path.c_str(), static_cast<uid_t>(*directory.uid),
                                   static_cast<gid_t>(directory.gid.value_or(0))) != 0) {
        throw_errno("cannot chown {} to {}:{}", path.string(), *directory.uid,
                    directory.gid.value_or(0));
      }
    }
  }
}
void NewExt4Image::remove_staging_tree() {
  if (staging_.empty()) return;
  std::error_code ignored;
  fs::remove_all(staging_, ignored);  // made by this run, holds only directories
  staging_.clear();
}

}  // namespace evmdk::host::hook_detail
