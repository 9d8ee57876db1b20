#include "evmdk/host/verify/verify_pipeline.h"

#include <algorithm>
#include <cstring>

#include "evmdk/error.h"

namespace evmdk::host {

void ZeroCheck::consume(const std::byte* data, size_t size, uint64_t stream_offset) {
  if (first_nonzero_) return;
  // Compare word-sized blocks against a zero block first; only a hit needs the exact byte.
  static constexpr std::byte kZeros[4096] = {};
  size_t done = 0;
  while (done < size) {
    size_t step = std::min(size - done, sizeof(kZeros));
    if (std::memcmp(data + done, kZeros, step) != 0) {
      for (size_t i = 0; i < step; ++i) {
        if (data[done + i] != std::byte{0}) {
          first_nonzero_ = stream_offset + done + i;
          return;
        }
      }
    }
    done += step;
  }
}

OrderedStreamPool::OrderedStreamPool(std::vector<StreamSink*> sinks, unsigned threads)
    : sinks_(std::move(sinks)),
      queues_(sinks_.size()),
      busy_(sinks_.size(), false),
      scheduled_(sinks_.size(), false) {
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { worker(); });
}

OrderedStreamPool::~OrderedStreamPool() {
  try {
    finish();
  } catch (...) {
    // The error was already reported to whoever called finish() or push(); a destructor on an
    // unwinding path only needs the threads joined.
  }
}

void OrderedStreamPool::process(Item& item) {
  StreamSink* sink = sinks_.at(item.chunk.stream);
  if (sink != nullptr) sink->consume(item.chunk.data, item.chunk.size, item.chunk.stream_offset);
  item.lease.release();
}

void OrderedStreamPool::push(const Chunk& chunk, ChunkLease lease) {
  if (threads_.empty()) {
    if (error_) std::rethrow_exception(error_);
    Item item{chunk, std::move(lease)};
    process(item);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    size_t stream = chunk.stream;
    queues_.at(stream).push_back(Item{chunk, std::move(lease)});
    if (!busy_[stream] && !scheduled_[stream]) {
      scheduled_[stream] = true;
      ready_.push_back(stream);
    }
  }
  work_ready_.notify_one();
}

void OrderedStreamPool::worker() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
    if (ready_.empty()) return;  // stopping and nothing left
    size_t stream = ready_.front();
    ready_.pop_front();
    scheduled_[stream] = false;
    busy_[stream] = true;
    // Keep this stream while it has chunks: only one thread may touch its sink at a time.
    while (!queues_[stream].empty()) {
      Item item = std::move(queues_[stream].front());
      queues_[stream].pop_front();
      bool failed = static_cast<bool>(error_);
      lock.unlock();
      if (failed) {
        item.lease.release();
      } else {
        try {
          process(item);
        } catch (...) {
          item.lease.release();
          std::lock_guard relock(mutex_);
          if (!error_) error_ = std::current_exception();
        }
      }
      lock.lock();
    }
    busy_[stream] = false;
  }
}

void OrderedStreamPool::finish() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  if (error_) std::rethrow_exception(error_);
}

}  // namespace evmdk::host
