#pragma once
// How the guest finds a composed disk (ComposeOptions::disk_id): the lower Storages' source,
// `serial:<S>` or `gpt-disk-guid:<GUID>` (evmdk/contract/disk_source.h), and which modes allow
// the GUID (docs/runtime-integration.md, VMMs without a serial).
#include <string>

#include "evmdk/host/compose/compose.h"

namespace evmdk::host {

// Throws evmdk::Error naming --disk-id and the mode when `id` needs a GPT the mode does not
// write (gpt-guid with flat or raw mode).
void check_disk_id(DiskId id, ComposeMode mode);

// A lower Storage's source for a planned disk (result.serial, result.disk_guid filled in).
std::string lower_storage_source(DiskId id, const ComposeResult& result);

}  // namespace evmdk::host
