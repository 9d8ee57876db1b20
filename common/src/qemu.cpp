#include "evmdk/qemu.h"

namespace evmdk {

std::string qemu_escape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

}  // namespace evmdk
