#include "evmdk/host/verify/verify_pipeline.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

#include "evmdk/error.h"

namespace evmdk::host {

std::string to_hex(const Sha256Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(64);
  for (uint8_t byte : digest) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xF]);
  }
  return hex;
}

std::optional<Sha256Digest> sha256_from_hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Sha256Digest digest{};
  for (size_t i = 0; i < 32; ++i) {
    int high = nibble(hex[2 * i]), low = nibble(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    digest[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return digest;
}

struct Sha256::Context {
  EVP_MD_CTX* ctx = nullptr;
  ~Context() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  context_->ctx = EVP_MD_CTX_new();
  if (context_->ctx == nullptr || EVP_DigestInit_ex(context_->ctx, EVP_sha256(), nullptr) != 1) {
    throw Error("verify: cannot initialise SHA-256 (OpenSSL)");
  }
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(context_->ctx, data, size) != 1) throw Error("verify: SHA-256 update failed");
}

Sha256Digest Sha256::finish() {
  Sha256Digest digest{};
  unsigned length = 0;
  if (EVP_DigestFinal_ex(context_->ctx, digest.data(), &length) != 1 || length != digest.size()) {
    throw Error("verify: SHA-256 final failed");
  }
  return digest;
}

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
