#include "evmdk/error.h"

#include <cerrno>
#include <cstring>

namespace evmdk {

SystemError::SystemError(int error_number, const std::string& message)
    : Error(message), error_number_(error_number) {}

void throw_errno_message(int error_number, const std::string& message) {
  throw SystemError(error_number, fmt::format("{}: {}", message, std::strerror(error_number)));
}

std::string with_context(const std::string& context, const std::exception& error) {
  return fmt::format("{}: {}", context, error.what());
}

void throw_with_context(const std::exception& error, const std::string& context) {
  if (const auto* system = dynamic_cast<const SystemError*>(&error)) {
    throw SystemError(system->error_number(), with_context(context, error));
  }
  throw Error(with_context(context, error));
}

void rethrow_current_with_context(const std::string& context) {
  try {
    throw;
  } catch (const std::exception& error) {
    throw_with_context(error, context);
  }
}

}  // namespace evmdk
