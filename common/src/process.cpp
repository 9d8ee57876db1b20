#include "evmdk/process.h"

#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

extern char** environ;

namespace evmdk {
namespace {

UniqueFd memory_file(const char* name) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd) throw_errno("memfd_create({})", name);
  return fd;
}

std::string read_all(int fd, const std::string& what) {
  std::string out;
  char buffer[8192];
  off_t offset = 0;
  while (true) {
    ssize_t n = ::pread(fd, buffer, sizeof buffer, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("reading the output of {}", what);
    if (n == 0) return out;
    out.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
}

// posix_spawn file actions, destroyed on every path.
class SpawnActions {
 public:
  SpawnActions() { posix_spawn_file_actions_init(&actions_); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&actions_); }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input) {
  if (argv.empty()) throw Error("run_process: no program given");
  const std::string& program = argv[0];
  UniqueFd in = memory_file("stdin");
  UniqueFd out = memory_file("stdout");
  UniqueFd err = memory_file("stderr");
  write_all(in.get(), input.data(), input.size(), "stdin of " + program);
  SpawnActions actions;
  // dup2 clears close-on-exec on the child's copies; the originals stay private.
  posix_spawn_file_actions_adddup2(actions.get(), in.get(), 0);
  posix_spawn_file_actions_adddup2(actions.get(), out.get(), 1);
  posix_spawn_file_actions_adddup2(actions.get(), err.get(), 2);
  // The child's stdin shares our file offset: start it at the beginning.
  if (::lseek(in.get(), 0, SEEK_SET) != 0) throw_errno("rewinding stdin of {}", program);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, program.c_str(), actions.get(), nullptr, args.data(), environ);
  if (rc != 0) throw_errno_message(rc, fmt::format("cannot run {}", program));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid for {}", program);
  }
  ProcessResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_all(out.get(), program);
  result.err = read_all(err.get(), program);
  return result;
}

}  // namespace evmdk
