#pragma once
// Shared helpers for tests: prerequisites that must fail (not skip) under CI=true, temp
// directories, running commands, and building real EROFS layers with mkfs.erofs.
#include <gtest/gtest.h>

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/error.h"

namespace evmdk::test {

bool in_ci();  // CI=true in the environment

// Each returns a reason when the prerequisite is missing, nullopt when it is there.
std::optional<std::string> missing_root();  // root with loop-control and mount rights
std::optional<std::string> missing_tools(std::initializer_list<std::string> tools);
std::optional<std::string> missing_qemu();  // qemu-system-x86_64, a kernel in /boot, busybox

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs argv (no shell) and captures its output. `input` is fed to stdin.
CommandResult run(const std::vector<std::string>& argv, const std::string& input = {});
// Runs a shell command line via /bin/sh -c.
CommandResult sh(const std::string& command_line);
// Path to the built erofs-vmdk command, and a shorthand to run it.
std::string cli_path();
CommandResult cli(const std::vector<std::string>& args, const std::string& input = {});
std::string source_dir();  // repository root

// A temp directory removed (after unmounting nothing: tests unmount their own) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& contents);
std::string read_file(const std::string& path);

// Creates a directory tree from {relative path: contents}; a path ending in '/' is a directory.
void make_tree(const std::string& root, const std::map<std::string, std::string>& files);
// Builds an EROFS image from a directory with mkfs.erofs (deterministic: fixed timestamp,
// optional fixed UUID). Throws on failure with mkfs.erofs's output.
void make_erofs(const std::string& source_dir, const std::string& image,
                const std::string& uuid = {}, const std::vector<std::string>& extra_args = {});

// The message of the evmdk::Error that `f` throws, or "(no error)" (for EXPECT_THAT on it).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace evmdk::test

// Use at the top of a test body. Outside CI a missing prerequisite skips with the reason;
// with CI=true it fails, because CI must run every test.
#define EVMDK_REQUIRE(missing_expr)                                              \
  do {                                                                           \
    if (auto evmdk_missing_ = (missing_expr)) {                                  \
      if (::evmdk::test::in_ci()) {                                              \
        FAIL() << "CI=true but prerequisite missing: " << *evmdk_missing_;       \
      } else {                                                                   \
        GTEST_SKIP() << "prerequisite missing: " << *evmdk_missing_;             \
      }                                                                          \
    }                                                                            \
  } while (0)
#define EVMDK_REQUIRE_ROOT() EVMDK_REQUIRE(::evmdk::test::missing_root())
#define EVMDK_REQUIRE_TOOLS(...) EVMDK_REQUIRE(::evmdk::test::missing_tools({__VA_ARGS__}))
#define EVMDK_REQUIRE_QEMU() EVMDK_REQUIRE(::evmdk::test::missing_qemu())
