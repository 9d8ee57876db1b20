// The verify read engine and its consumers: exact bytes in stream order through io_uring
// (buffered and O_DIRECT, unaligned heads and tails, past-EOF zeros), per-stream SHA-256 on
// several threads, the zero check and the progress bar.
#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <atomic>
#include <random>

#include "evmdk/error.h"
#include "evmdk/host/verify/verify_pipeline.h"
#include "evmdk/host/verify/verify_progress.h"
#include "evmdk/host/verify/verify_reader.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

std::string random_bytes(size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string bytes(size, '\0');
  for (auto& c : bytes) c = static_cast<char>(generator() & 0xFF);
  return bytes;
}

std::string expected_stream(const ReadStream& stream, const std::map<std::string, std::string>& contents) {
  std::string out;
  for (const auto& segment : stream.segments) {
    const std::string& file = contents.at(segment.path);
    for (uint64_t i = 0; i < segment.length; ++i) {
      uint64_t at = segment.file_offset + i;
      out.push_back(at < file.size() ? file[at] : '\0');
    }
  }
  return out;
}

Sha256Digest one_shot_sha256(const std::string& data) {
  Sha256Digest digest{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

struct Fixture {
  test::TempDir dir;
  std::map<std::string, std::string> contents;
  std::vector<ReadStream> streams;

  Fixture() {
    // Sizes chosen so segments start and end off 4 KiB boundaries and one extent runs past EOF.
    std::string a = dir / "a.bin", b = dir / "b.bin", c = dir / "c.bin";
    contents[a] = random_bytes(300000, 1);
    contents[b] = random_bytes(65536 * 3, 2);
    contents[c] = random_bytes(5000, 3);
    for (const auto& [path, data] : contents) test::write_file(path, data);
    streams.push_back({{{a, 0, 300000}}});
    streams.push_back({{{b, 512, 65536}, {a, 4096 * 3 + 100, 20000}, {c, 0, 12288}}});  // c: past EOF
    streams.push_back({{{b, 0, 65536 * 3}}});
    streams.push_back({{{c, 4096, 904}}});  // tail only
    streams.push_back({{{c, 9000, 3000}}});  // entirely past EOF: zeros
  }
};

void expect_reads_exact_bytes(ReaderOptions options) {
  Fixture fixture;
  UringReader reader(options);
  std::vector<std::string> got(fixture.streams.size());
  std::vector<bool> saw_last(fixture.streams.size(), false);
  auto stats = reader.run(fixture.streams, [&](const Chunk& chunk, ChunkLease) {
    ASSERT_EQ(chunk.stream_offset, got[chunk.stream].size()) << "out of order in stream " << chunk.stream;
    ASSERT_FALSE(saw_last[chunk.stream]);
    got[chunk.stream].append(reinterpret_cast<const char*>(chunk.data), chunk.size);
    saw_last[chunk.stream] = chunk.last;
  });
  uint64_t total = 0;
  for (size_t i = 0; i < fixture.streams.size(); ++i) {
    std::string expected = expected_stream(fixture.streams[i], fixture.contents);
    EXPECT_EQ(got[i].size(), expected.size()) << "stream " << i;
    EXPECT_TRUE(got[i] == expected) << "stream " << i << " bytes differ";
    EXPECT_TRUE(saw_last[i]) << "stream " << i;
    total += expected.size();
  }
  EXPECT_EQ(stats.bytes, total);
  if (options.direct) {
    EXPECT_GT(stats.direct_bytes, 0u);
  }
}

TEST(VerifyReader, DeliversExactBytesInStreamOrderBuffered) {
  expect_reads_exact_bytes({.chunk_size = 8192, .queue_depth = 4, .consumer_buffers = 2, .parallel_streams = 1});
}

TEST(VerifyReader, DeliversExactBytesWithSeveralStreamsInterleaved) {
  expect_reads_exact_bytes({.chunk_size = 4096, .queue_depth = 8, .consumer_buffers = 3, .parallel_streams = 3});
}

TEST(VerifyReader, DeliversExactBytesWithODirectAndUnalignedEdges) {
  expect_reads_exact_bytes({.chunk_size = 16384, .queue_depth = 4, .consumer_buffers = 2,
                            .parallel_streams = 2, .direct = true});
}

TEST(VerifyReader, MissingFileIsNamedBeforeAnyRead) {
  test::TempDir dir;
  std::string missing = dir / "gone.erofs";
  UringReader reader;
  try {
    reader.run({{{{missing, 0, 4096}}}}, [](const Chunk&, ChunkLease) { FAIL() << "no chunk expected"; });
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(missing), std::string::npos) << error.what();
  }
}

TEST(VerifyReader, ConsumerErrorStopsTheRunAndReturnsEveryBuffer) {
  Fixture fixture;
  UringReader reader({.chunk_size = 4096, .queue_depth = 4, .consumer_buffers = 1});
  int seen = 0;
  EXPECT_THROW(reader.run(fixture.streams, [&](const Chunk&, ChunkLease) {
    if (++seen == 3) throw Error("stop");
  }), Error);
  // The reader is reusable: every buffer came back.
  std::atomic<uint64_t> bytes = 0;
  reader.run(fixture.streams, [&](const Chunk& chunk, ChunkLease) { bytes += chunk.size; });
  EXPECT_EQ(bytes.load(), 300000u + 65536 + 20000 + 12288 + 65536 * 3 + 904 + 3000);
}

TEST(VerifyPipeline, Sha256MatchesTheStandardVector) {
  Sha256 sha;
  sha.update("abc", 3);
  EXPECT_EQ(to_hex(sha.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE(sha256_from_hex("xyz"));
  EXPECT_EQ(to_hex(*sha256_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(VerifyPipeline, ParallelPerStreamDigestsEqualSequentialOnes) {
  Fixture fixture;
  for (unsigned threads : {0u, 1u, 2u, 3u}) {
    std::vector<std::unique_ptr<Sha256>> digests;
    std::vector<StreamSink*> sinks;
    for (size_t i = 0; i < fixture.streams.size(); ++i) {
      digests.push_back(std::make_unique<Sha256>());
      sinks.push_back(digests.back().get());
    }
    UringReader reader({.chunk_size = 4096, .queue_depth = 4, .consumer_buffers = 4, .parallel_streams = 2});
    OrderedStreamPool pool(sinks, threads);
    reader.run(fixture.streams, [&](const Chunk& chunk, ChunkLease lease) { pool.push(chunk, std::move(lease)); });
    pool.finish();
    for (size_t i = 0; i < fixture.streams.size(); ++i) {
      EXPECT_EQ(to_hex(digests[i]->finish()),
                to_hex(one_shot_sha256(expected_stream(fixture.streams[i], fixture.contents))))
          << "stream " << i << " with " << threads << " threads";
    }
  }
}

TEST(VerifyPipeline, SinkErrorSurfacesFromTheReaderRun) {
  struct Failing final : StreamSink {
    void consume(const std::byte*, size_t, uint64_t offset) override {
      if (offset > 0) throw Error("bad chunk at {}", offset);
    }
  };
  Fixture fixture;
  Failing failing;
  std::vector<StreamSink*> sinks(fixture.streams.size(), &failing);
  UringReader reader({.chunk_size = 4096, .queue_depth = 2, .consumer_buffers = 2});
  OrderedStreamPool pool(sinks, 2);
  try {
    reader.run(fixture.streams, [&](const Chunk& chunk, ChunkLease lease) { pool.push(chunk, std::move(lease)); });
    pool.finish();
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("bad chunk at"), std::string::npos);
  }
}

TEST(VerifyPipeline, ZeroCheckReportsTheFirstNonZeroByte) {
  std::vector<std::byte> block(10000, std::byte{0});
  ZeroCheck clean;
  clean.consume(block.data(), block.size(), 0);
  EXPECT_FALSE(clean.first_nonzero());
  block[7777] = std::byte{1};
  block[9000] = std::byte{1};
  ZeroCheck dirty;
  dirty.consume(block.data(), 5000, 100000);
  EXPECT_FALSE(dirty.first_nonzero());
  dirty.consume(block.data() + 5000, 5000, 105000);
  EXPECT_EQ(dirty.first_nonzero(), std::optional<uint64_t>(105000 + 2777));
}

TEST(VerifyProgress, LineShowsFractionSizesAndRate) {
  EXPECT_EQ(render_progress_line("verify", 512u << 20, 1024u << 20, 100.0 * (1 << 20), 10),
            "verify [#####-----]  50%  512.0 MiB / 1.0 GiB  100.0 MiB/s");
  EXPECT_EQ(format_bytes(100), "100 B");
}

TEST(VerifyProgress, DrawsOnlyWhenEnabled) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_NONBLOCK), 0);
  {
    ProgressBar quiet("verify", 100, pipe_fds[1], false);
    quiet.update(50);
    quiet.finish();
    ProgressBar loud("verify", 100, pipe_fds[1], true);
    loud.update(50);
    loud.finish();
  }
  ::close(pipe_fds[1]);
  char buffer[4096];
  ssize_t got = ::read(pipe_fds[0], buffer, sizeof(buffer));
  ::close(pipe_fds[0]);
  ASSERT_GT(got, 0);
  std::string drawn(buffer, static_cast<size_t>(got));
  EXPECT_NE(drawn.find("100%"), std::string::npos) << drawn;
  EXPECT_EQ(drawn.back(), '\n');
  EXPECT_EQ(std::count(drawn.begin(), drawn.end(), '\n'), 1) << "only the enabled bar draws";
  // Not a terminal: the stderr bar stays quiet under the test runner's redirected stderr.
  if (::isatty(STDERR_FILENO) != 1) {
    EXPECT_FALSE(ProgressBar::for_stderr("verify", 1).enabled());
  }
}

}  // namespace
}  // namespace evmdk::host
