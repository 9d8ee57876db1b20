#pragma once
// dm-verity parameters as they travel from host to guest: Kata's X-kata.dmverity-enabled /
// X-kata.dmverity.* options of a Storage, for the storage's own device, and the same keys
// under X-erofs-vmdk.device.<slot>. for extra devices of a flat (fsmeta) disk. ONE encoder
// (the host's compose and hook, the CLI) and ONE decoder (the guest's plan, the CLI's
// `verity open/check`), so what the host writes is exactly what the guest reads.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evmdk::contract {

// Parameters of one dm-verity mapping. The hash tree lives on the hash device at hash_offset
// (usually the same device as the data: containerd appends it to layer.erofs).
struct VerityOptions {
  std::string root_hash;     // lowercase hex, digest size * 2 characters
  uint64_t hash_offset = 0;  // bytes from the start of the hash device, a multiple of 512
  // With a superblock (the default) these are read from it; when given explicitly in the
  // options they must agree with it, or activation is refused.
  std::optional<uint32_t> data_block_size;  // bytes (X-kata.dmverity.blocksize)
  std::optional<uint32_t> hash_block_size;  // bytes (X-kata.dmverity.hashsize)
  std::optional<std::string> algorithm;     // "sha256", ... (X-kata.dmverity.algorithm)
  std::optional<std::string> salt;          // lowercase hex; "" = no salt (encoded as "-")
  std::optional<uint32_t> hash_type;        // 0 or 1 (X-kata.dmverity.hashtype)
  // No superblock at hash_offset: the tree starts right there and every parameter comes from
  // the options (defaults: sha256, 4096/4096, hash type 1, no salt); the data area is the
  // first hash_offset bytes of the data device.
  bool no_superblock = false;

  bool operator==(const VerityOptions&) const = default;
};

// The options that carry `options`, in this order: X-kata.dmverity-enabled=true, roothash,
// hashoffset, then blocksize, hashsize, algorithm, salt, hashtype and no-superblock=true when
// set. The result is checked with decode_verity_options, so the host never emits what the
// guest refuses: throws evmdk::Error "dm-verity options: <why>" otherwise.
std::vector<std::string> encode_verity_options(const VerityOptions& options);

// Reads X-kata.dmverity-enabled / X-kata.dmverity.* from a Storage's options (other options
// are ignored). nullopt when verity is not enabled (no X-kata.dmverity-enabled=true and no
// X-kata.dmverity.* option, or X-kata.dmverity-enabled=false with none). Throws evmdk::Error
// naming `context` and the offending option for: an unknown X-kata.dmverity.* key; a key
// given twice; X-kata.dmverity-enabled other than true/false (1/0, yes/no; any case), or false
// with X-kata.dmverity.* options present; a missing or malformed root hash (even-length hex)
// or hash offset (decimal, multiple of 512); a block size that is not a power of two in
// 512..1 MiB; an algorithm name that is not 1..31 of [A-Za-z0-9_-]; a salt that is not hex of
// at most 256 bytes or "-"; a hash type other than 0 or 1; no-superblock with hashoffset 0.
std::optional<VerityOptions> decode_verity_options(const std::vector<std::string>& options,
                                                   std::string_view context);

// Whether `option` is one of the X-kata.dmverity-enabled / X-kata.dmverity.* options.
bool is_dmverity_option(std::string_view option);

// ---- extra devices of a flat (fsmeta) disk ----
// Kata's X-kata.dmverity* options describe the storage's own device only, so a device slot's
// options carry the same keys under "X-erofs-vmdk.device.<slot>." instead of "X-kata." (slot
// 1 = the first extra device, as in the EROFS device table), e.g.
// X-erofs-vmdk.device.2.dmverity.roothash=<hex>. Their hashoffset is a byte offset on the
// whole disk (compose puts the trees after the last device).
std::string device_option_prefix(unsigned slot);  // "X-erofs-vmdk.device.<slot>."
// X-kata.dmverity* options -> the same options for device `slot`; other options are dropped.
std::vector<std::string> to_device_verity_options(const std::vector<std::string>& options,
                                                  unsigned slot);
// The options of device `slot` among a storage's options, back in X-kata.dmverity* form (for
// decode_verity_options); empty when that slot has none.
std::vector<std::string> device_verity_options(const std::vector<std::string>& options,
                                               unsigned slot);
// Slots that have any "X-erofs-vmdk.device.<slot>." option, ascending. Throws evmdk::Error
// for a malformed slot number (0, not a number).
std::vector<unsigned> device_option_slots(const std::vector<std::string>& options);

// encode_verity_options for device `slot`: X-erofs-vmdk.device.<slot>.dmverity* options.
std::vector<std::string> encode_device_verity_options(const VerityOptions& options, unsigned slot);
// Every device slot's dm-verity options, decoded: (slot, options) ascending by slot, slots
// with verity not enabled left out. Throws evmdk::Error "<context>, device <slot>: <why>" for
// a slot above `max_slot`, an X-erofs-vmdk.device.<slot>.<key> that is not a dm-verity
// option, and for anything decode_verity_options refuses.
std::vector<std::pair<unsigned, VerityOptions>> decode_device_verity_options(
    const std::vector<std::string>& options, std::string_view context, unsigned max_slot);

}  // namespace evmdk::contract
