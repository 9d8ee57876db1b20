#pragma once
// Internal to verify: the per-layer checks that do not depend on how the disk is read (the
// layer file's identity against layout.json, its dm-verity tree), and what a raw composed disk
// (compose --format raw, disk.img) needs besides: each byte of a layer's range on the image
// compared with the layer file it was assembled from.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "evmdk/host/compose/layout.h"
#include "evmdk/host/verify/verify.h"
#include "evmdk/host/verify/verify_pipeline.h"
#include "evmdk/input_file.h"
#include "virtual_disk.h"

namespace evmdk::host::verify_detail {

using ProblemFn = std::function<void(std::string)>;

// A raw image compose assembled (disk.img): every gpt/flat disk of format raw, and a raw-mode
// one whose disk is not the layer itself (padded for pmem).
bool is_raw_image(const Layout& layout);

// The disk of a compose output directory: the file name layout.json gives (the descriptor, or
// the raw image); raw mode without an image names the layer itself, and then no descriptor is
// read. Throws evmdk::Error naming `layout_path` when it is no file name.
std::string descriptor_name(const Layout& layout, const std::string& layout_path);

// How `file` differs from the identity layout.json recorded for `expected`, or nullopt.
std::optional<std::string> identity_change(const InputFile& file, const LayoutLayer& expected);

// A raw composed disk: the image verify reads (its fd stays open for the whole run).
struct RawImageRef {
  std::string path;
  int fd = -1;
};

// The layer's dm-verity superblock as the guest finds it (on the disk, where the options point),
// then the tree recomputed against the root hash the guest is given and the stored tree: from
// the layer file's data (a VMDK, whose descriptor was checked to map that file), or, with
// `image`, from the image's own bytes at the layer's offset (what the guest reads there).
void check_layer_verity(VirtualDisk& disk, const LayoutLayer& expected, VerifiedLayer& layer,
                        unsigned threads, const std::optional<RawImageRef>& image,
                        const ProblemFn& problem);

// A range of a raw image that compose filled from a file (layout.json's extents with a path:
// layers, flat devices, flat dm-verity areas).
struct RawSource {
  uint64_t disk_begin = 0;
  uint64_t disk_end = 0;
  std::string path;
  uint64_t file_offset = 0;
  std::optional<size_t> layer;  // layout.json's layer index
  int fd = -1;                  // the source file, opened by the verifier
};
std::vector<RawSource> raw_sources(const Layout& layout);

// Passes a stream of the image (starting at disk offset `disk_start`) on to `inner` and
// compares every byte that lies in one of `sources` with that file's byte (zeros past its end);
// remembers the first difference.
class SourceCompare final : public StreamSink {
 public:
  SourceCompare(StreamSink* inner, uint64_t disk_start, std::vector<const RawSource*> sources)
      : inner_(inner), disk_start_(disk_start), sources_(std::move(sources)) {}
  void consume(const std::byte* data, size_t size, uint64_t stream_offset) override;

  struct Mismatch {
    uint64_t disk_offset = 0;
    uint64_t file_offset = 0;
    const RawSource* source = nullptr;
  };
  const std::optional<Mismatch>& first_mismatch() const { return mismatch_; }
  uint64_t disk_start() const { return disk_start_; }

 private:
  StreamSink* inner_;
  uint64_t disk_start_;
  std::vector<const RawSource*> sources_;
  std::optional<Mismatch> mismatch_;
};

}  // namespace evmdk::host::verify_detail
