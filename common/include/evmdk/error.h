#pragma once
// Errors carry their context (which file, layer, option) in the message; callers add context
// by catching and rethrowing with throw_with_context(), which keeps a SystemError's errno.
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

// Throws `error` again with "<context>: " before its message, keeping what a caller may branch
// on: a SystemError stays a SystemError with the same error_number(); any other exception
// (evmdk::Error, a JSON or standard library exception) becomes an evmdk::Error. Replaces
//   catch (const std::exception& error) { throw Error("{}: {}", context, error.what()); }
// with
//   catch (const std::exception& error) { throw_with_context(error, context); }
[[noreturn]] void throw_with_context(const std::exception& error, const std::string& context);

// The same for the exception being handled, with a formatted context; call only inside a
// catch block (a non-std::exception is rethrown unchanged):
//   catch (...) { rethrow_with_context("layer {} ({})", index, path); }
[[noreturn]] void rethrow_current_with_context(const std::string& context);
template <typename... Args>
[[noreturn]] void rethrow_with_context(fmt::format_string<Args...> format, Args&&... args) {
  rethrow_current_with_context(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace evmdk
