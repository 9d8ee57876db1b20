#include "evmdk/contract/container_id.h"

#include <string>

#include "evmdk/error.h"

namespace evmdk::contract {
namespace {

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// The id as it can be shown in an error: printable ASCII as is, anything else as \xNN.
std::string printable(std::string_view id) {
  std::string out;
  for (size_t i = 0; i < id.size() && i < 2 * kMaxContainerIdBytes; ++i) {
    auto c = static_cast<unsigned char>(id[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (id.size() > 2 * kMaxContainerIdBytes) out += "...";
  return out;
}

}  // namespace

void validate_container_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxContainerIdBytes) {
    throw Error("container id '{}' must be 1..{} bytes (it is {})", printable(id),
                kMaxContainerIdBytes, id.size());
  }
  if (id.front() == '.' || id.front() == '-') {
    throw Error("container id '{}' must not start with '.' or '-'", printable(id));
  }
  for (char c : id) {
    if (!id_char(c)) {
      throw Error("container id '{}' may only contain [A-Za-z0-9_.-]", printable(id));
    }
  }
}

}  // namespace evmdk::contract
