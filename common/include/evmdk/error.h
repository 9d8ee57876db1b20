#pragma once
// Errors carry their context (which file, layer, option) in the message; callers add context
// by catching and rethrowing with with_context().
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace evmdk {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}

  template <typename... Args>
  explicit Error(fmt::format_string<Args...> format, Args&&... args)
      : std::runtime_error(fmt::format(format, std::forward<Args>(args)...)) {}
};

// An Error caused by a failed system call; keeps errno for callers that branch on it.
class SystemError : public Error {
 public:
  SystemError(int error_number, const std::string& message);
  int error_number() const noexcept { return error_number_; }

 private:
  int error_number_;
};

// Throws SystemError for the current errno: "<message>: <strerror(errno)>".
template <typename... Args>
[[noreturn]] void throw_errno(fmt::format_string<Args...> format, Args&&... args);

[[noreturn]] void throw_errno_message(int error_number, const std::string& message);

template <typename... Args>
[[noreturn]] void throw_errno(fmt::format_string<Args...> format, Args&&... args) {
  int saved = errno;
  throw_errno_message(saved, fmt::format(format, std::forward<Args>(args)...));
}

// Prefixes an error message: "<context>: <original message>".
std::string with_context(const std::string& context, const std::exception& error);

}  // namespace evmdk
