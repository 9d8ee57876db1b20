#pragma once
// The io_uring read engine behind `erofs-vmdk verify`: reads byte ranges of files in large
// chunks, several in flight, into registered page-aligned buffers, optionally with O_DIRECT,
// and hands each chunk to a consumer in order within its stream.
//
// A *stream* is one logical byte range (a layer, a gap, a GPT area) that may span several
// files; its chunks are delivered strictly in stream order, so a consumer can feed them to a
// sequential digest. Chunks of different streams interleave, which is what lets several
// consumers (one per layer) run on different cores at once.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace evmdk::host {

// `length` bytes of `path` starting at `file_offset`. Bytes past the end of the file read as
// zeros, as QEMU presents them for a FLAT extent longer than its file.
struct ReadSegment {
  std::string path;
  uint64_t file_offset = 0;
  uint64_t length = 0;
};

struct ReadStream {
  std::vector<ReadSegment> segments;  // concatenated in order
  uint64_t length() const;
};

struct ReaderOptions {
  size_t chunk_size = 4u << 20;  // bytes per read; rounded up to a multiple of 4096
  unsigned queue_depth = 8;      // reads in flight
  // Chunks handed out but not yet released are capped at this many (bounds memory when the
  // consumer is slower than the disk).
  unsigned consumer_buffers = 8;
  // Streams read concurrently (round-robin). 1 reads strictly one stream after the other, which
  // is kindest to a disk; more lets that many consumers work in parallel.
  unsigned parallel_streams = 1;
  bool direct = false;  // O_DIRECT for the aligned body of every segment
};

// One delivered piece of a stream. Valid until released through its ChunkLease.
struct Chunk {
  size_t stream = 0;           // index into the streams given to run()
  uint64_t stream_offset = 0;  // offset of data[0] within the stream
  const std::byte* data = nullptr;
  size_t size = 0;
  bool last = false;  // the final chunk of its stream
};

class UringReader;

// Returns the chunk's buffer to the reader when destroyed (from any thread).
class ChunkLease {
 public:
  ChunkLease() = default;
  ChunkLease(UringReader* reader, unsigned buffer) : reader_(reader), buffer_(buffer) {}
  ChunkLease(ChunkLease&& other) noexcept;
  ChunkLease& operator=(ChunkLease&& other) noexcept;
  ChunkLease(const ChunkLease&) = delete;
  ChunkLease& operator=(const ChunkLease&) = delete;
  ~ChunkLease();
  void release();

 private:
  UringReader* reader_ = nullptr;
  unsigned buffer_ = 0;
};

struct ReadStats {
  uint64_t bytes = 0;         // bytes delivered
  uint64_t direct_bytes = 0;  // of which read with O_DIRECT
  uint64_t reads = 0;         // read requests completed
};

class UringReader {
 public:
  explicit UringReader(ReaderOptions options = {});
  ~UringReader();
  UringReader(const UringReader&) = delete;
  UringReader& operator=(const UringReader&) = delete;

  // Reads every stream. `consume` runs on the calling thread for each chunk in stream order; it
  // may keep the lease (e.g. hand the chunk to a worker) and release it later from any thread.
  // `progress`, when set, gets the total bytes delivered so far. Throws evmdk::Error naming the
  // file and offset on an I/O error or a missing file.
  using Consumer = std::function<void(const Chunk&, ChunkLease)>;
  ReadStats run(const std::vector<ReadStream>& streams, const Consumer& consume,
                const std::function<void(uint64_t)>& progress = {});

  const ReaderOptions& options() const { return options_; }

 private:
  friend class ChunkLease;
  void release_buffer(unsigned buffer);
  struct State;
  class Run;  // one run(): its cursors, reads in flight and phases
  ReaderOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace evmdk::host
