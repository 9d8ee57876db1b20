#pragma once
// QEMU command-line text shared by compose and the hook.
#include <string>
#include <string_view>

namespace evmdk {

// A value for a QEMU option (-drive file=<value>,...): QEMU's option syntax ends a value at a
// comma, and a doubled comma stands for one, so every ',' is doubled.
std::string qemu_escape(std::string_view value);

}  // namespace evmdk
