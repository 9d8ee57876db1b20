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

UringReader::UringReader(ReaderOptions options) : options_(options), state_(std::make_unique<State>()) {
  options_.chunk_size = std::max<size_t>(align_up(std::max<size_t>(options_.chunk_size, 1), kDirectAlign), kDirectAlign);
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
  state_->registered =
      io_uring_register_buffers(&state_->ring, iovecs.data(), static_cast<unsigned>(iovecs.size())) == 0;
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

ReadStats UringReader::run(const std::vector<ReadStream>& streams, const Consumer& consume,
                           const std::function<void(uint64_t)>& progress) {
  State& state = *state_;
  ReadStats stats;
  std::map<std::string, OpenFile> files;
  auto open_file = [&](const std::string& path) -> OpenFile& {
    auto found = files.find(path);
    if (found != files.end()) return found->second;
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
    return files.emplace(path, std::move(file)).first->second;
  };

  std::vector<StreamCursor> cursors(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) cursors[i].total = streams[i].length();
  // Open everything up front so a missing layer file is reported before any reading.
  for (const auto& stream : streams) {
    for (const auto& segment : stream.segments) {
      if (segment.length > 0) open_file(segment.path);
    }
  }

  std::vector<size_t> active;  // streams being issued, round-robin
  size_t next_stream = 0;
  size_t round_robin = 0;
  auto refill_active = [&] {
    while (active.size() < options_.parallel_streams && next_stream < streams.size()) {
      if (cursors[next_stream].total > 0) active.push_back(next_stream);
      ++next_stream;
    }
  };
  refill_active();

  // Builds the next chunk of stream `index`, or nullopt when it is fully issued.
  auto next_chunk = [&](size_t index) -> std::optional<PendingChunk> {
    StreamCursor& cursor = cursors[index];
    const auto& segments = streams[index].segments;
    while (cursor.segment < segments.size() && cursor.segment_done >= segments[cursor.segment].length) {
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
    if (direct && chunk.to_read % kDirectAlign != 0) chunk.to_read = static_cast<size_t>(align_up(chunk.to_read, kDirectAlign));
    chunk.direct = direct;
    cursor.segment_done += size;
    cursor.stream_offset += size;
    chunk.last = cursor.stream_offset == cursor.total;
    return chunk;
  };

  std::map<unsigned, PendingChunk> in_flight;  // keyed by buffer
  auto submit_read = [&](PendingChunk& chunk) {
    io_uring_sqe* sqe = io_uring_get_sqe(&state.ring);
    if (sqe == nullptr) throw Error("verify: io_uring submission queue full");
    std::byte* destination = state.buffers[chunk.buffer].get() + chunk.done;
    int fd = chunk.direct ? chunk.file->direct.get() : chunk.file->buffered.get();
    unsigned length = static_cast<unsigned>(chunk.to_read - chunk.done);
    uint64_t offset = chunk.file_offset + chunk.done;
    if (state.registered) {
      io_uring_prep_read_fixed(sqe, fd, destination, length, offset, static_cast<int>(chunk.buffer));
    } else {
      io_uring_prep_read(sqe, fd, destination, length, offset);
    }
    io_uring_sqe_set_data64(sqe, chunk.buffer);
  };

  auto deliver_ready = [&](size_t index) {
    StreamCursor& cursor = cursors[index];
    for (auto it = cursor.completed.find(cursor.next_deliver); it != cursor.completed.end();
         it = cursor.completed.find(cursor.next_deliver)) {
      PendingChunk chunk = it->second;
      cursor.completed.erase(it);
      ++cursor.next_deliver;
      std::byte* data = state.buffers[chunk.buffer].get();
      if (chunk.done < chunk.size) std::memset(data + chunk.done, 0, chunk.size - chunk.done);
      stats.bytes += chunk.size;
      if (chunk.direct) stats.direct_bytes += chunk.size;
      Chunk view{chunk.stream, chunk.stream_offset, data, chunk.size, chunk.last};
      consume(view, ChunkLease(this, chunk.buffer));
    }
  };

  auto take_free_buffer = [&]() -> std::optional<unsigned> {
    std::lock_guard lock(state.mutex);
    if (state.free_buffers.empty()) return std::nullopt;
    unsigned buffer = state.free_buffers.back();
    state.free_buffers.pop_back();
    return buffer;
  };
  auto return_buffer = [&](unsigned buffer) {
    std::lock_guard lock(state.mutex);
    state.free_buffers.push_back(buffer);
  };

  auto drain_in_flight = [&]() noexcept {
    if (!in_flight.empty()) io_uring_submit(&state.ring);
    while (!in_flight.empty()) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&state.ring, &cqe) < 0) break;
      unsigned buffer = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      io_uring_cqe_seen(&state.ring, cqe);
      in_flight.erase(buffer);
      return_buffer(buffer);
    }
  };
  auto wait_all_buffers = [&] {
    std::unique_lock lock(state.mutex);
    state.buffer_freed.wait(lock, [&] { return state.free_buffers.size() == state.buffers.size(); });
  };

  try {
    for (;;) {
      // Issue as many reads as there are free slots and buffers.
      unsigned queued = 0;
      while (in_flight.size() < options_.queue_depth && !active.empty()) {
        std::optional<unsigned> buffer = take_free_buffer();
        if (!buffer) break;
        std::optional<PendingChunk> chunk;
        while (!active.empty() && !chunk) {
          round_robin %= active.size();
          chunk = next_chunk(active[round_robin]);
          if (!chunk) {
            active.erase(active.begin() + static_cast<std::ptrdiff_t>(round_robin));
            refill_active();
          } else {
            ++round_robin;
          }
        }
        if (!chunk) {
          return_buffer(*buffer);
          break;
        }
        chunk->buffer = *buffer;
        if (chunk->to_read == 0) {
          // Entirely past EOF: nothing to read, only zeros to present.
          cursors[chunk->stream].completed.emplace(chunk->sequence, *chunk);
          deliver_ready(chunk->stream);
          continue;
        }
        auto& stored = in_flight.emplace(*buffer, *chunk).first->second;
        submit_read(stored);
        ++queued;
      }
      if (queued > 0) io_uring_submit(&state.ring);

      if (in_flight.empty()) {
        if (active.empty()) break;  // everything issued and delivered
        // Every buffer is with the consumer: wait until one comes back.
        std::unique_lock lock(state.mutex);
        state.buffer_freed.wait(lock, [&] { return !state.free_buffers.empty(); });
        continue;
      }

      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_wait_cqe(&state.ring, &cqe);
      if (rc < 0) throw_errno_message(-rc, "verify: io_uring_wait_cqe failed");
      std::vector<std::pair<unsigned, int>> completions;
      unsigned head = 0;
      io_uring_for_each_cqe(&state.ring, head, cqe) {
        completions.emplace_back(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)), cqe->res);
      }
      io_uring_cq_advance(&state.ring, static_cast<unsigned>(completions.size()));

      // First settle every consumed completion (so none is left waiting in in_flight if
      // something throws), then report errors, then deliver.
      bool resubmitted = false;
      std::optional<SystemError> read_error;
      std::vector<size_t> touched_streams;
      for (auto [buffer, result] : completions) {
        auto it = in_flight.find(buffer);
        if (it == in_flight.end()) continue;
        PendingChunk& chunk = it->second;
        ++stats.reads;
        if (result < 0) {
          uint64_t offset = chunk.file_offset + chunk.done;
          if (!read_error) {
            read_error.emplace(-result, fmt::format("verify: reading {} bytes of {} at offset {}{}: {}",
                                                    chunk.to_read - chunk.done, *chunk.path, offset,
                                                    chunk.direct ? " (O_DIRECT)" : "",
                                                    std::strerror(-result)));
          }
          return_buffer(buffer);
          in_flight.erase(it);
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
        in_flight.erase(it);
        cursors[finished.stream].completed.emplace(finished.sequence, finished);
        touched_streams.push_back(finished.stream);
      }
      if (resubmitted) io_uring_submit(&state.ring);
      if (read_error) throw *read_error;
      for (size_t stream : touched_streams) deliver_ready(stream);
      if (progress) progress(stats.bytes);
    }
  } catch (...) {
    // The kernel may still be writing into buffers: wait for every read before they can go.
    drain_in_flight();
    for (auto& cursor : cursors) {
      for (auto& [sequence, chunk] : cursor.completed) return_buffer(chunk.buffer);
      cursor.completed.clear();
    }
    wait_all_buffers();
    throw;
  }
  // Consumers may still hold leases (e.g. digest workers): the buffers must outlive them.
  wait_all_buffers();
  return stats;
}

}  // namespace evmdk::host
