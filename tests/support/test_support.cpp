#include "test_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "evmdk/process.h"

namespace fs = std::filesystem;

namespace evmdk::test {

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

static bool on_path(const std::string& tool) {
  if (tool.find('/') != std::string::npos) return ::access(tool.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  dirs += ":/usr/sbin:/sbin";
  std::stringstream stream(dirs);
  std::string dir;
  while (std::getline(stream, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::optional<std::string> missing_root() {
  if (::geteuid() != 0) return "needs root (loop devices and mounts)";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) return "needs /dev/loop-control";
  return std::nullopt;
}

std::optional<std::string> missing_tools(std::initializer_list<std::string> tools) {
  std::string missing;
  for (const auto& tool : tools) {
    if (!on_path(tool)) missing += (missing.empty() ? "" : ", ") + tool;
  }
  if (missing.empty()) return std::nullopt;
  return "tools not installed: " + missing + " (run scripts/install-deps.sh)";
}

std::optional<std::string> missing_qemu() {
  if (auto why = missing_tools({"qemu-system-x86_64", "qemu-img", "cpio"})) return why;
  if (::access("/bin/busybox", X_OK) != 0 && !on_path("busybox")) return "busybox-static not installed";
  bool kernel = false;
  if (fs::exists("/boot")) {
    for (const auto& entry : fs::directory_iterator("/boot")) {
      if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) kernel = true;
    }
  }
  if (!kernel) return "no kernel in /boot (install linux-image-amd64)";
  return std::nullopt;
}

CommandResult run(const std::vector<std::string>& argv, const std::string& input) {
  CommandResult result;
  try {
    ProcessResult process = run_process(argv, input);
    result.exit_code = process.exit_code;
    result.out = std::move(process.out);
    result.err = std::move(process.err);
  } catch (const std::exception& error) {
    // As a shell would report it: tests compare exit codes, not exceptions.
    result.exit_code = 127;
    result.err = error.what();
  }
  return result;
}

CommandResult sh(const std::string& command_line) { return run({"/bin/sh", "-c", command_line}); }

std::string cli_path() { return EVMDK_CLI_PATH; }
std::string source_dir() { return EVMDK_SOURCE_DIR; }

CommandResult cli(const std::vector<std::string>& args, const std::string& input) {
  std::vector<std::string> argv{cli_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, input);
}

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "evmdk-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << contents;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void make_tree(const std::string& root, const std::map<std::string, std::string>& files) {
  fs::create_directories(root);
  for (const auto& [relative, contents] : files) {
    fs::path path = fs::path(root) / relative;
    if (!relative.empty() && relative.back() == '/') {
      fs::create_directories(path);
      continue;
    }
    fs::create_directories(path.parent_path());
    write_file(path.string(), contents);
  }
}

void make_erofs(const std::string& source, const std::string& image, const std::string& uuid,
                const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv{"mkfs.erofs", "-T", "0"};
  if (!uuid.empty()) argv.insert(argv.end(), {"-U", uuid});
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.push_back(image);
  argv.push_back(source);
  auto result = run(argv);
  if (result.exit_code != 0) {
    throw std::runtime_error("mkfs.erofs " + image + " failed: " + result.out + result.err);
  }
}

}  // namespace evmdk::test
