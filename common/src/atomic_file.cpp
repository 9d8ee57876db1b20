#include "evmdk/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace evmdk {
namespace {

std::string parent_dir(const std::string& path) {
  auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::string temp_name_for(const std::string& path) {
  std::random_device random;
  auto p = std::filesystem::path(path);
  return (p.parent_path() / fmt::format(".{}.tmp-{:08x}", p.filename().string(), random()))
      .string();
}

// Writes `contents` to a new temp file next to `path`; returns the temp file's path.
std::string write_temp(const std::string& path, std::string_view contents, mode_t mode,
                       off_t sparse_size) {
  std::string temp = temp_name_for(path);
  UniqueFd fd = open_or_throw(temp, O_WRONLY | O_CREAT | O_EXCL, mode);
  try {
    if (::fchmod(fd.get(), mode) != 0) throw_errno("cannot set mode of {}", temp);
    write_all(fd.get(), contents.data(), contents.size(), temp);
    if (sparse_size > 0 && ::ftruncate(fd.get(), sparse_size) != 0) {
      throw_errno("cannot size {} to {} bytes", temp, sparse_size);
    }
    if (::fsync(fd.get()) != 0) throw_errno("cannot fsync {}", temp);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  return temp;
}

}  // namespace

void fsync_directory(const std::string& dir) {
  UniqueFd fd = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  if (::fsync(fd.get()) != 0) throw_errno("cannot fsync directory {}", dir);
}

void write_file_atomic(const std::string& path, std::string_view contents, mode_t mode) {
  std::string temp = write_temp(path, contents, mode, 0);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temp.c_str());
    throw_errno_message(saved, fmt::format("cannot rename {} to {}", temp, path));
  }
  fsync_directory(parent_dir(path));
}

OutputTransaction::OutputTransaction(std::string dir) : dir_(std::move(dir)) {
  if (::mkdir(dir_.c_str(), 0755) == 0) {
    created_dir_ = true;
  } else if (errno != EEXIST) {
    throw_errno("cannot create output directory {}", dir_);
  } else if (!std::filesystem::is_directory(dir_)) {
    throw Error("output path {} exists and is not a directory", dir_);
  }
}

OutputTransaction::~OutputTransaction() {
  if (committed_) return;
  for (const auto& staged : staged_) ::unlink(staged.temp_path.c_str());
  if (created_dir_) ::rmdir(dir_.c_str());
}

std::string OutputTransaction::final_path(const std::string& name) const {
  return (std::filesystem::path(dir_) / name).string();
}

std::string OutputTransaction::stage_path(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    throw Error("output name '{}' must be a plain file name", name);
  }
  for (const auto& staged : staged_) {
    if (staged.name == name) throw Error("output {} staged twice", final_path(name));
  }
  return final_path(name);
}

void OutputTransaction::add(const std::string& name, std::string_view contents, mode_t mode) {
  std::string path = stage_path(name);
  staged_.push_back({name, write_temp(path, contents, mode, 0)});
}

void OutputTransaction::add_sparse(const std::string& name, off_t size, mode_t mode) {
  std::string path = stage_path(name);
  staged_.push_back({name, write_temp(path, {}, mode, size)});
}

void OutputTransaction::add_filled(
    const std::string& name, mode_t mode,
    const std::function<void(int fd, const std::string& staged_path)>& fill) {
  std::string path = stage_path(name);
  std::string temp = temp_name_for(path);
  UniqueFd fd = open_or_throw(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  try {
    if (::fchmod(fd.get(), mode) != 0) throw_errno("cannot set mode of {}", temp);
    fill(fd.get(), temp);
    if (::fsync(fd.get()) != 0) throw_errno("cannot fsync {}", temp);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  staged_.push_back({name, temp});
}

void OutputTransaction::commit() {
  for (const auto& staged : staged_) {
    std::string target = final_path(staged.name);
    if (::rename(staged.temp_path.c_str(), target.c_str()) != 0) {
      throw_errno("cannot rename {} to {}", staged.temp_path, target);
    }
  }
  fsync_directory(dir_);
  committed_ = true;
}

}  // namespace evmdk
