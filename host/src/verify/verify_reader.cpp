#include "evmdk/host/verify/verify_reader.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"

namespace evmdk::host {

namespace {

// O_DIRECT needs the file offset, length and buffer aligned to the device's logical block size;
// 4096 covers every common device (512-byte and 4K-native) without asking each one.
constexpr uint64_t kDirectAlign = 4096;

uint64_t align_up(uint64_t value, uint64_t align) { return (value + align - 1) / align * align; }
uint64_t align_down(uint64_t value, uint64_t align) { return value / align * align; }

struct AlignedFree {
  void operator()(void* pointer) const { std::free(pointer); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedFree>;

AlignedBuffer allocate_aligned(size_t size) {
  void* pointer = nullptr;
  if (::posix_memalign(&pointer, kDirectAlign, size) != 0) {
    throw Error("verify: cannot allocate a {} byte read buffer", size);
  }
  return AlignedBuffer(static_cast<std::byte*>(pointer));
}

struct OpenFile {
  UniqueFd buffered;
  UniqueFd direct;  // invalid when O_DIRECT was not asked for or the filesystem refuses it
  uint64_t size = 0;
};

}  // namespace

uint64_t ReadStream::length() const {
  uint64_t total = 0;
  for (const auto& segment : segments) total += segment.length;
  return total;
}

ChunkLease::ChunkLease(ChunkLease&& other) noexcept
    : reader_(std::exchange(other.reader_, nullptr)), buffer_(other.buffer_) {}

ChunkLease& ChunkLease::operator=(ChunkLease&& other) noexcept {
  if (this != &other) {
    release();
    reader_ = std::exchange(other.reader_, nullptr);
    buffer_ = other.buffer_;
  }
  return *this;
}

ChunkLease::~ChunkLease() { release(); }

void ChunkLease::release() {
  if (reader_ != nullptr) std::exchange(reader_, nullptr)->release_buffer(buffer_);
}

struct UringReader::State {
  io_uring ring{};
  bool ring_ready = false;
  bool registered = false;
  std::vector<AlignedBuffer> buffers;

  std::mutex mutex;  // guards free_buffers (leases are released from consumer threads)
  std::condition_variable buffer_freed;
  std::vector<unsigned> free_buffers;

  ~State() {
    if (ring_ready) io_uring_queue_exit(&ring);
  }
};

UringReader::UringReader(ReaderOptions options)
    : options_(options), state_(std::make_unique<State>()) {
  options_.chunk_size = std::max<size_t>(
      align_up(std::max<size_t>(options_.chunk_size, 1), kDirectAlign), kDirectAlign);
  options_.queue_depth = std::clamp(options_.queue_depth, 1u, 256u);
  options_.consumer_buffers = std::max(options_.consumer_buffers, 1u);
  options_.parallel_streams = std::max(options_.parallel_streams, 1u);

  int rc = io_uring_queue_init(options_.queue_depth, &state_->ring, 0);
  if (rc < 0) throw_errno_message(-rc, "verify: io_uring_queue_init failed");
  state_->ring_ready = true;

  unsigned count = options_.queue_depth + options_.consumer_buffers;
  std::vector<iovec> iovecs;
  for (unsigned i = 0; i < count; ++i) {
    state_->buffers.push_back(allocate_aligned(options_.chunk_size));
    iovecs.push_back(iovec{state_->buffers.back().get(), options_.chunk_size});
    state_->free_buffers.push_back(i);
  }
  // Registered buffers save the kernel pinning pages on every read; without them (e.g. a low
  // RLIMIT_MEMLOCK) plain reads work just as well, only a little slower.
  state_->registered = io_uring_register_buffers(&state_->ring, iovecs.data(),
                                                 static_cast<unsigned>(iovecs.size())) == 0;
}

UringReader::~UringReader() = default;

void UringReader::release_buffer(unsigned buffer) {
  {
    std::lock_guard lock(state_->mutex);
    state_->free_buffers.push_back(buffer);
  }
  state_->buffer_freed.notify_all();
}

namespace {

// A read in flight, or completed and waiting for earlier chunks of its stream.
struct PendingChunk {
  size_t stream = 0;
  uint64_t sequence = 0;
  uint64_t stream_offset = 0;
  unsigned buffer = 0;
  OpenFile* file = nullptr;
  const std::string* path = nullptr;
  uint64_t file_offset = 0;  // of byte 0 of the chunk
  size_t size = 0;           // bytes the chunk presents
  size_t to_read = 0;        // bytes to read from the file (the rest is past EOF: zeros)
  size_t done = 0;           // bytes read so far
  bool direct = false;
  bool last = false;
};

struct StreamCursor {
  size_t segment = 0;
  uint64_t segment_done = 0;
  uint64_t stream_offset = 0;
  uint64_t next_issue = 0;    // sequence number of the next chunk to issue
  uint64_t next_deliver = 0;  // sequence number of the next chunk to hand out
  uint64_t total = 0;
  std::map<uint64_t, PendingChunk> completed;
};

}  // namespace

// One run() over a set of streams: the files, each stream's cursor, the reads in flight, and
// the phases of the loop (issue reads, wait, settle completions, deliver in stream order).
class UringReader::Run {
 public:
  Run(UringReader& reader, const std::vector<ReadStream>& streams, const Consumer& consume,
      const std::function<void(uint64_t)>& progress)
      : reader_(reader),
        options_(reader.options_),
        state_(*reader.state_),
        streams_(streams),
        consume_(consume),
        progress_(progress),
        cursors_(streams.size()) {}

  ReadStats run() {
    for (size_t i = 0; i < streams_.size(); ++i) cursors_[i].total = streams_[i].length();
    // Open everything up front so a missing layer file is reported before any reading.
    for (const auto& stream : streams_) {
      for (const auto& segment : stream.segments) {
        if (segment.length > 0) open_file(segment.path);
      }
    }
    refill_active();
    try {
      for (;;) {
        issue_reads();
        if (in_flight_.empty()) {
          if (active_.empty()) break;  // everything issued and delivered
          // Every buffer is with the consumer: wait until one comes back.
          std::unique_lock lock(state_.mutex);
          state_.buffer_freed.wait(lock, [&] { return !state_.free_buffers.empty(); });
          continue;
        }
        settle_completions();
        if (progress_) progress_(stats_.bytes);
      }
    } catch (...) {
      // The kernel may still be writing into buffers: wait for every read before they can go.
      drain_in_flight();
      for (auto& cursor : cursors_) {
        for (auto& [sequence, chunk] : cursor.completed) return_buffer(chunk.buffer);
        cursor.completed.clear();
      }
      wait_all_buffers();
      throw;
    }
    // Consumers may still hold leases (e.g. digest workers): the buffers must outlive them.
    wait_all_buffers();
    return stats_;
  }

 private:
  OpenFile& open_file(const std::string& path) {
    auto found = files_.find(path);
    if (found != files_.end()) return found->second;
    OpenFile file;
    InputFile input = open_input_file(path, "verify: extent file");
    file.size = static_cast<uint64_t>(input.st.st_size);
    file.buffered = std::move(input.fd);
    if (options_.direct) {
      // Filesystems without O_DIRECT support refuse it with EINVAL: read those buffered.
      // Reopened through the fd just opened, so it is the same file, not the name again.
      std::string self = fmt::format("/proc/self/fd/{}", file.buffered.get());
      int fd = ::open(self.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
      if (fd >= 0) file.direct.reset(fd);
    }
    return files_.emplace(path, std::move(file)).first->second;
  }

  void refill_active() {
    while (active_.size() < options_.parallel_streams && next_stream_ < streams_.size()) {
      if (cursors_[next_stream_].total > 0) active_.push_back(next_stream_);
      ++next_stream_;
    }
  }

  // The next chunk of stream `index`, or nullopt when it is fully issued.
  std::optional<PendingChunk> next_chunk(size_t index) {
    StreamCursor& cursor = cursors_[index];
    const auto& segments = streams_[index].segments;
    while (cursor.segment < segments.size() &&
           cursor.segment_done >= segments[cursor.segment].length) {
      ++cursor.segment;
      cursor.segment_done = 0;
    }
    if (cursor.segment >= segments.size()) return std::nullopt;
    const ReadSegment& segment = segments[cursor.segment];
    OpenFile& file = open_file(segment.path);
    PendingChunk chunk;
    chunk.stream = index;
    chunk.sequence = cursor.next_issue++;
    chunk.stream_offset = cursor.stream_offset;
    chunk.file = &file;
    chunk.path = &segment.path;
    chunk.file_offset = segment.file_offset + cursor.segment_done;
    uint64_t remaining = segment.length - cursor.segment_done;
    uint64_t size = std::min<uint64_t>(remaining, options_.chunk_size);
    bool direct = static_cast<bool>(file.direct);
    if (direct) {
      uint64_t misalignment = chunk.file_offset % kDirectAlign;
      if (misalignment != 0) {
        // Unaligned head: read buffered up to the next aligned offset.
        size = std::min<uint64_t>(size, kDirectAlign - misalignment);
        direct = false;
      } else if (size % kDirectAlign != 0) {
        // Unaligned tail: the aligned part goes direct, the last partial block buffered.
        if (size >= kDirectAlign) {
          size = align_down(size, kDirectAlign);
        } else {
          direct = false;
        }
      }
    }
    chunk.size = static_cast<size_t>(size);
    uint64_t readable = chunk.file_offset < file.size ? file.size - chunk.file_offset : 0;
    chunk.to_read = static_cast<size_t>(std::min<uint64_t>(size, readable));
    // O_DIRECT can read past EOF as long as the request itself is aligned: the kernel returns a
    // short count, and the rest is zero-filled like any past-EOF byte.
    if (direct && chunk.to_read % kDirectAlign != 0) {
      chunk.to_read = static_cast<size_t>(align_up(chunk.to_read, kDirectAlign));
    }
    chunk.direct = direct;
    cursor.segment_done += size;
    cursor.stream_offset += size;
    chunk.last = cursor.stream_offset == cursor.total;
    return chunk;
  }

  // The next chunk of the active streams, round-robin; nullopt when all are fully issued.
  std::optional<PendingChunk> next_round_robin_chunk() {
    std::optional<PendingChunk> chunk;
    while (!active_.empty() && !chunk) {
      round_robin_ %= active_.size();
      chunk = next_chunk(active_[round_robin_]);
      if (!chunk) {
        active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(round_robin_));
        refill_active();
      } else {
        ++round_robin_;
      }
    }
    return chunk;
  }

  void submit_read(PendingChunk& chunk) {
    io_uring_sqe* sqe = io_uring_get_sqe(&state_.ring);
    if (sqe == nullptr) throw Error("verify: io_uring submission queue full");
    std::byte* destination = state_.buffers[chunk.buffer].get() + chunk.done;
    int fd = chunk.direct ? chunk.file->direct.get() : chunk.file->buffered.get();
    unsigned length = static_cast<unsigned>(chunk.to_read - chunk.done);
    uint64_t offset = chunk.file_offset + chunk.done;
    if (state_.registered) {
      io_uring_prep_read_fixed(sqe, fd, destination, length, offset,
                               static_cast<int>(chunk.buffer));
    } else {
      io_uring_prep_read(sqe, fd, destination, length, offset);
    }
    io_uring_sqe_set_data64(sqe, chunk.buffer);
  }

  // Issues as many reads as there are free slots and buffers.
  void issue_reads() {
    unsigned queued = 0;
    while (in_flight_.size() < options_.queue_depth && !active_.empty()) {
      std::optional<unsigned> buffer = take_free_buffer();
      if (!buffer) break;
      std::optional<PendingChunk> chunk = next_round_robin_chunk();
      if (!chunk) {
        return_buffer(*buffer);
        break;
      }
      chunk->buffer = *buffer;
      if (chunk->to_read == 0) {
        // Entirely past EOF: nothing to read, only zeros to present.
        cursors_[chunk->stream].completed.emplace(chunk->sequence, *chunk);
        deliver_ready(chunk->stream);
        continue;
      }
      auto& stored = in_flight_.emplace(*buffer, *chunk).first->second;
      submit_read(stored);
      ++queued;
    }
    if (queued > 0) io_uring_submit(&state_.ring);
  }

  // Waits for completions, then settles every one consumed (so none is left waiting in
  // in_flight if something throws), then reports the first error, then delivers.
  void settle_completions() {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&state_.ring, &cqe);
    if (rc < 0) throw_errno_message(-rc, "verify: io_uring_wait_cqe failed");
    std::vector<std::pair<unsigned, int>> completions;
    unsigned head = 0;
    io_uring_for_each_cqe(&state_.ring, head, cqe) {
      completions.emplace_back(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)), cqe->res);
    }
    io_uring_cq_advance(&state_.ring, static_cast<unsigned>(completions.size()));

    bool resubmitted = false;
    std::optional<SystemError> read_error;
    std::vector<size_t> touched_streams;
    for (auto [buffer, result] : completions) {
      auto it = in_flight_.find(buffer);
      if (it == in_flight_.end()) continue;
      PendingChunk& chunk = it->second;
      ++stats_.reads;
      if (result < 0) {
        uint64_t offset = chunk.file_offset + chunk.done;
        if (!read_error) {
          read_error.emplace(
              -result, fmt::format("verify: reading {} bytes of {} at offset {}{}: {}",
                                   chunk.to_read - chunk.done, *chunk.path, offset,
                                   chunk.direct ? " (O_DIRECT)" : "", std::strerror(-result)));
        }
        return_buffer(buffer);
        in_flight_.erase(it);
        continue;
      }
      chunk.done += static_cast<size_t>(result);
      bool at_eof = result == 0 || chunk.file_offset + chunk.done >= chunk.file->size;
      if (chunk.done < chunk.to_read && !at_eof) {
        // A short read before EOF: read the rest (buffered, since the remainder may no longer
        // be aligned for O_DIRECT).
        chunk.direct = false;
        submit_read(chunk);
        resubmitted = true;
        continue;
      }
      chunk.done = std::min(chunk.done, chunk.size);
      PendingChunk finished = chunk;
      in_flight_.erase(it);
      cursors_[finished.stream].completed.emplace(finished.sequence, finished);
      touched_streams.push_back(finished.stream);
    }
    if (resubmitted) io_uring_submit(&state_.ring);
    if (read_error) throw *read_error;
    for (size_t stream : touched_streams) deliver_ready(stream);
  }

  // Hands out the stream's completed chunks that are next in its order.
  void deliver_ready(size_t index) {
    StreamCursor& cursor = cursors_[index];
    for (auto it = cursor.completed.find(cursor.next_deliver); it != cursor.completed.end();
         it = cursor.completed.find(cursor.next_deliver)) {
      PendingChunk chunk = it->second;
      cursor.completed.erase(it);
      ++cursor.next_deliver;
      std::byte* data = state_.buffers[chunk.buffer].get();
      if (chunk.done < chunk.size) std::memset(data + chunk.done, 0, chunk.size - chunk.done);
      stats_.bytes += chunk.size;
      if (chunk.direct) stats_.direct_bytes += chunk.size;
      Chunk view{chunk.stream, chunk.stream_offset, data, chunk.size, chunk.last};
      consume_(view, ChunkLease(&reader_, chunk.buffer));
    }
  }

  std::optional<unsigned> take_free_buffer() {
    std::lock_guard lock(state_.mutex);
    if (state_.free_buffers.empty()) return std::nullopt;
    unsigned buffer = state_.free_buffers.back();
    state_.free_buffers.pop_back();
    return buffer;
  }

  void return_buffer(unsigned buffer) {
    std::lock_guard lock(state_.mutex);
    state_.free_buffers.push_back(buffer);
  }

  void drain_in_flight() noexcept {
    if (!in_flight_.empty()) io_uring_submit(&state_.ring);
    while (!in_flight_.empty()) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&state_.ring, &cqe) < 0) break;
      unsigned buffer = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      io_uring_cqe_seen(&state_.ring, cqe);
      in_flight_.erase(buffer);
      return_buffer(buffer);
    }
  }

  void wait_all_buffers() {
    std::unique_lock lock(state_.mutex);
    state_.buffer_freed.wait(lock,
                             [&] { return state_.free_buffers.size() == state_.buffers.size(); });
  }

  UringReader& reader_;
  const ReaderOptions& options_;
  State& state_;
  const std::vector<ReadStream>& streams_;
  const Consumer& consume_;
  const std::function<void(uint64_t)>& progress_;
  ReadStats stats_;
  std::map<std::string, OpenFile> files_;
  std::vector<StreamCursor> cursors_;
  std::vector<size_t> active_;  // streams being issued, round-robin
  size_t next_stream_ = 0;
  size_t round_robin_ = 0;
  std::map<unsigned, PendingChunk> in_flight_;  // keyed by buffer
};

ReadStats UringReader::run(const std::vector<ReadStream>& streams, const Consumer& consume,
                           const std::function<void(uint64_t)>& progress) {
  return Run(*this, streams, consume, progress).run();
}

}  // namespace evmdk::host
