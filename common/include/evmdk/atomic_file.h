#pragma once
// Atomic output: write to a temporary file in the same directory, fsync it, rename it over the
// target, fsync the directory. Readers see the old file or the new one, never a torn one.
#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk {

void write_file_atomic(const std::string& path, std::string_view contents, mode_t mode = 0644);

// fsync(2) of a directory, so a rename inside it is durable.
void fsync_directory(const std::string& dir);

// A set of output files that appear together or not at all. Files are staged as hidden temp
// files in the target directory (created if missing); commit() renames them into place and
// fsyncs the directory. Destroying an uncommitted transaction removes every staged file, and
// the directory too when this transaction created it, so a failed run leaves nothing behind.
class OutputTransaction {
 public:
  explicit OutputTransaction(std::string dir);
  OutputTransaction(const OutputTransaction&) = delete;
  OutputTransaction& operator=(const OutputTransaction&) = delete;
  ~OutputTransaction();

  const std::string& dir() const { return dir_; }

  // Stages `name` (a plain file name inside dir) with the given contents.
  void add(const std::string& name, std::string_view contents, mode_t mode = 0644);
  // Stages an empty sparse file of `size` bytes (e.g. an all-zero filler).
  void add_sparse(const std::string& name, off_t size, mode_t mode = 0644);
  // Stages `name` as a new empty file that `fill` writes through its fd (e.g. a raw image
  // assembled by reflink); it is fsynced after `fill` returns. `fill` gets the staged path.
  void add_filled(const std::string& name, mode_t mode,
                  const std::function<void(int fd, const std::string& staged_path)>& fill);
  // Path a staged file will have after commit().
  std::string final_path(const std::string& name) const;

  // Renames every staged file into place. Names that existed before are replaced atomically.
  void commit();

 private:
  struct Staged {
    std::string name;
    std::string temp_path;
  };
  std::string stage_path(const std::string& name);

  std::string dir_;
  bool created_dir_ = false;
  bool committed_ = false;
  std::vector<Staged> staged_;
};

}  // namespace evmdk
