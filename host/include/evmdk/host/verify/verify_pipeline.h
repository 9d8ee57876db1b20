#pragma once
// Consumers of the verify read engine: a pool that processes the chunks of each stream in order
// on several threads (different streams in parallel, each stream on one thread at a time), and
// the per-stream sinks that run there (SHA-256, all-zero check).
//
// Why streams and not chunks: SHA-256 is a chain over the whole input, so one layer's digest
// cannot be split across cores without changing what is computed (it would no longer equal
// `sha256sum layer.erofs`). What can run in parallel is *different* layers: with two cores two
// layers are hashed at once. A disk with one big layer hashes at one core's speed.
#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "evmdk/digest.h"
#include "evmdk/host/verify/verify_reader.h"

namespace evmdk::host {

// Receives one stream's bytes in order.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void consume(const std::byte* data, size_t size, uint64_t stream_offset) = 0;
};

// SHA-256 and hex text are common's (evmdk/digest.h).
using evmdk::sha256_from_hex;
using evmdk::Sha256Digest;
using evmdk::to_hex;

// A stream's SHA-256 (evmdk::Sha256 fed from the pool).
class Sha256 final : public StreamSink {
 public:
  void update(const void* data, size_t size) { digest_.update(data, size); }
  Sha256Digest finish() { return digest_.finish(); }
  void consume(const std::byte* data, size_t size, uint64_t) override { update(data, size); }

 private:
  evmdk::Sha256 digest_;
};

// Checks that a stream is all zeros; remembers the stream offset of the first non-zero byte.
class ZeroCheck final : public StreamSink {
 public:
  void consume(const std::byte* data, size_t size, uint64_t stream_offset) override;
  std::optional<uint64_t> first_nonzero() const { return first_nonzero_; }

 private:
  std::optional<uint64_t> first_nonzero_;
};

// Accepts the data and does nothing with it (streams that are only read, e.g. GPT areas whose
// structure is checked separately).
class DiscardSink final : public StreamSink {
 public:
  void consume(const std::byte*, size_t, uint64_t) override {}
};

// Runs sinks[chunk.stream]->consume() for every pushed chunk, in stream order, on `threads`
// worker threads (0 = inline on the pushing thread). An exception from a sink stops the pool:
// the next push() and finish() rethrow it.
class OrderedStreamPool {
 public:
  OrderedStreamPool(std::vector<StreamSink*> sinks, unsigned threads);
  ~OrderedStreamPool();
  OrderedStreamPool(const OrderedStreamPool&) = delete;
  OrderedStreamPool& operator=(const OrderedStreamPool&) = delete;

  void push(const Chunk& chunk, ChunkLease lease);
  // Waits for every pushed chunk to be consumed and joins the workers.
  void finish();

 private:
  struct Item {
    Chunk chunk;
    ChunkLease lease;
  };
  void worker();
  void process(Item& item);

  std::vector<StreamSink*> sinks_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::vector<std::deque<Item>> queues_;
  std::vector<bool> busy_;
  std::vector<bool> scheduled_;
  std::deque<size_t> ready_;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace evmdk::host
