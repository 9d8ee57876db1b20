#pragma once
// A storage `source` that names a GPT disk by content, for VMMs that cannot give a virtio-blk
// disk a serial (Firecracker): `gpt-disk-guid:<GUID>`, the disk GUID of the GPT header at LBA 1
// as lower-case 8-4-4-4-12 hex (docs/storage-spec.md "Sources"). The guest scans its whole
// disks and takes the one disk whose primary GPT header (valid CRC) carries that GUID; two such
// disks are an error. ONE encoder (compose, the hook) and ONE decoder (the guest's plan and
// disk lookup). The source comes from the host, so the decoder is strict: the prefix, exactly
// 36 characters, lower-case hex, dashes at 8, 13, 18 and 23, nothing else.
#include <string>
#include <string_view>

#include "evmdk/ondisk/gpt.h"

namespace evmdk::contract {

inline constexpr std::string_view kGptDiskGuidSourcePrefix = "gpt-disk-guid:";

// Whether `source` starts with the prefix (it may still be malformed).
bool is_gpt_disk_guid_source(std::string_view source);
// The GUID of "gpt-disk-guid:<GUID>"; throws evmdk::Error naming the source when the prefix is
// missing or the GUID is not canonical lower-case 8-4-4-4-12 hex.
ondisk::Guid decode_gpt_disk_guid_source(std::string_view source);
std::string encode_gpt_disk_guid_source(const ondisk::Guid& guid);
// The same from a GUID's text (either case), checked: throws evmdk::Error for anything that is
// not 8-4-4-4-12 hex.
std::string encode_gpt_disk_guid_source(std::string_view guid_text);

}  // namespace evmdk::contract
