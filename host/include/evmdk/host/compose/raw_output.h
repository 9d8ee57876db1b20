#pragma once
// compose's raw output (--format raw|auto): whether every layer of a planned gpt/flat disk can
// be shared into the output directory, and the pieces that make its disk.img. Used by compose()
// (and so the hook); the assembler itself is raw_image.h.
#include <string>
#include <vector>

#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/raw_image.h"

namespace evmdk::host {

// Why the layers of `result` cannot all be shared by reflink into a file in `output_dir` (or
// its nearest existing parent, before compose creates it), naming the first layer at fault;
// empty when they can. Partial blocks at a layer's ends are copied by design and not counted.
std::string raw_sharing_problem(const ComposeResult& result, const std::string& output_dir);

// The pieces of `result`'s disk: compose's GPT head and tail as bytes, the gaps as holes, every
// layer, blob and verity area from its file (with the size it had when planned).
std::vector<RawPiece> raw_pieces_from_compose(const ComposeResult& result, const std::string& head,
                                              const std::string& tail);

}  // namespace evmdk::host
