#pragma once
// RAII owner of a child process (QEMU, or a host tool the harness runs). The child gets its own
// process group and dies with the harness thread (PR_SET_PDEATHSIG), and the destructor
// SIGKILLs the whole group and reaps it: no qemu outlives a test, whatever path it takes out.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace evmdk::qemu {

class HarnessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline void write_text(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  if (!out.flush()) throw HarnessError("cannot write " + path.string());
}

class ChildProcess {
 public:
  // Starts argv[0] (searched on PATH) with stdin from /dev/null and stdout+stderr appended to
  // output_file.
  ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& output_file) {
    if (argv.empty()) throw HarnessError("ChildProcess: empty argv");
    // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    std::string output = output_file.string();
    pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw HarnessError(std::string("fork failed: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      int in = ::open("/dev/null", O_RDONLY);
      int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (in < 0 || out < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);  // also from the parent, so kill(-pid) works immediately
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { kill_and_reap(); }

  pid_t pid() const { return pid_; }

  // Exit status (128+signal when killed) once the child has ended, nullopt while it runs.
  std::optional<int> poll() {
    if (status_) return status_;
    int raw = 0;
    pid_t got = ::waitpid(pid_, &raw, WNOHANG);
    if (got == pid_) {
      status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
      // Anything the child left in its group goes with it.
      ::kill(-pid_, SIGKILL);
    }
    return status_;
  }

  std::optional<int> wait_for(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!poll()) {
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status_;
  }

  // SIGKILL to the whole process group, then reap. Idempotent.
  int kill_and_reap() {
    if (status_) return *status_;
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int raw = 0;
    while (::waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
    }
    status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    return *status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct CommandOutput {
  int status = -1;
  std::string output;  // stdout and stderr interleaved
};

// Runs a host command to completion (bounded), capturing its output.
inline CommandOutput run_command(const std::vector<std::string>& argv,
                                 const std::filesystem::path& scratch_dir,
                                 std::chrono::seconds limit = std::chrono::seconds(300)) {
  auto log = scratch_dir / (".cmd-" + std::to_string(::getpid()) + "-" +
                            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  CommandOutput result;
  {
    ChildProcess child(argv, log);
    auto status = child.wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(limit));
    result.status = status ? *status : child.kill_and_reap();
    if (!status) result.output = "[killed after " + std::to_string(limit.count()) + " s]\n";
  }
  result.output += read_text(log);
  std::error_code ignored;
  std::filesystem::remove(log, ignored);
  return result;
}

}  // namespace evmdk::qemu
