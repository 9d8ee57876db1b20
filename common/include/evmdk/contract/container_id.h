#pragma once
// The one container-id rule shared by the host hook and the guest driver. An id names a
// directory and a journal under a shared base directory, and goes into device-mapper names, so
// it must be a single plain path component that cannot be mistaken for anything else: 1..128
// bytes of [A-Za-z0-9_.-], not starting with '.' or '-' (so never ".", "..", a hidden file, or
// something that looks like a command-line option).
#include <cstddef>
#include <string_view>

namespace evmdk::contract {

inline constexpr size_t kMaxContainerIdBytes = 128;

// Throws evmdk::Error naming the id (escaped, so a newline in it stays visible) and the rule it
// breaks.
void validate_container_id(std::string_view id);

}  // namespace evmdk::contract
