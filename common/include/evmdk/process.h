#pragma once
// Running a helper program (mkfs.ext4 from the hook, tools from the tests): no shell, PATH
// lookup, stdin from a string, stdout and stderr captured whole.
#include <string>
#include <vector>

namespace evmdk {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal number when it was killed
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] (looked up in PATH) with `input` on stdin and waits for it. Output goes to
// anonymous memory files rather than pipes, so a large output cannot deadlock the wait.
// Throws SystemError naming the program when it cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = {});

}  // namespace evmdk
