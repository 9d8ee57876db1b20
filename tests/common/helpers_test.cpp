// The shared helpers host and guest adopt: SHA-256 against sha256sum, hex, UUID text,
// qemu_escape, the bounded reader of untrusted files, and errors that keep their errno when
// context is added.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include "evmdk/blkid_ptr.h"
#include "evmdk/digest.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/openssl_ptr.h"
#include "evmdk/qemu.h"
#include "evmdk/uuid.h"
#include "test_support.h"

namespace evmdk {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

using test::error_of;

TEST(Digest, Sha256MatchesSha256sum) {
  EVMDK_REQUIRE_TOOLS("sha256sum");
  test::TempDir temp;
  std::string data;
  for (int i = 0; i < 100000; ++i) data += static_cast<char>(i * 7);
  test::write_file(temp / "data", data);
  auto summed = test::run({"sha256sum", temp / "data"});
  ASSERT_EQ(summed.exit_code, 0);
  std::string expected = summed.out.substr(0, 64);
  EXPECT_EQ(to_hex(sha256(data)), expected);
  Sha256 pieces;
  pieces.update(std::string_view(data).substr(0, 1000)).update(data.data() + 1000, 0);
  pieces.update(std::string_view(data).substr(1000));
  Sha256 moved = std::move(pieces);
  Sha256Digest digest = moved.finish();
  EXPECT_EQ(to_hex(digest), expected);
  EXPECT_EQ(sha256_from_hex(expected), digest);
  EXPECT_THAT(error_of([&] { moved.finish(); }), HasSubstr("finished twice"));
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Digest, HexStrictness) {
  const uint8_t bytes[] = {0x00, 0x9f, 0xff};
  EXPECT_EQ(to_hex(bytes), "009fff");
  EXPECT_EQ(to_hex("\x01\xab", 2), "01ab");
  EXPECT_EQ(parse_hex("009FfF"), (std::vector<uint8_t>{0x00, 0x9f, 0xff}));
  EXPECT_EQ(parse_hex(""), std::vector<uint8_t>{});
  EXPECT_EQ(parse_hex("abc"), std::nullopt);
  EXPECT_EQ(parse_hex("0g"), std::nullopt);
  EXPECT_EQ(parse_hex("+1"), std::nullopt);
  EXPECT_EQ(parse_hex(" 1"), std::nullopt);
  EXPECT_THAT(error_of([] { from_hex("abc", "--salt"); }),
              HasSubstr("--salt 'abc' has an odd number of hex digits"));
  EXPECT_THAT(error_of([] { from_hex("zz", "--salt"); }), HasSubstr("--salt 'zz' is not hex"));
  EXPECT_EQ(sha256_from_hex(std::string(63, 'a')), std::nullopt);
  EXPECT_EQ(sha256_from_hex(std::string(62, 'a') + "-a"), std::nullopt);
  EXPECT_TRUE(is_hex("09afAF"));
  EXPECT_FALSE(is_hex("x"));
  EXPECT_TRUE(is_lower_hex("09af"));
  EXPECT_FALSE(is_lower_hex("A"));
}

TEST(Uuid, TextRoundTrips) {
  Uuid uuid{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3, 4, 5, 6, 0xff};
  EXPECT_EQ(format_uuid(uuid), "01234567-89ab-cdef-0001-0203040506ff");
  EXPECT_EQ(parse_uuid_text("01234567-89AB-cdef-0001-0203040506ff"), uuid);
  for (std::string bad :
       {"", "01234567-89ab-cdef-0001-0203040506f", "01234567+89ab-cdef-0001-0203040506ff",
        "0123456789abcdef00010203040506ff", "01234567-89ab-cdef-0001-0203040506fg"}) {
    EXPECT_EQ(parse_uuid_text(bad), std::nullopt) << bad;
  }
  EXPECT_TRUE(
      same_uuid("01234567-89AB-cdef-0001-0203040506ff", "0123456789abcdef00010203040506FF"));
  EXPECT_FALSE(
      same_uuid("01234567-89ab-cdef-0001-0203040506ff", "01234567-89ab-cdef-0001-0203040506fe"));
}

TEST(Qemu, EscapeDoublesCommas) {
  EXPECT_EQ(qemu_escape("/a,b/c,,d"), "/a,,b/c,,,,d");
  EXPECT_EQ(qemu_escape(""), "");
  EXPECT_EQ(qemu_escape("plain"), "plain");
}

TEST(InputFile, ReadsSmallFilesWholeAndRefusesLargerOnes) {
  test::TempDir temp;
  std::string path = temp / "state.json";
  test::write_file(path, "0123456789");
  EXPECT_EQ(read_input_file(path, "hook state", 10), "0123456789");
  EXPECT_EQ(read_input_file(path, "hook state", 1 << 20), "0123456789");
  EXPECT_THAT(error_of([&] { read_input_file(path, "hook state", 9); }),
              HasSubstr("hook state " + path + ": 10 bytes, more than the 9 allowed"));
  test::write_file(temp / "empty", "");
  EXPECT_EQ(read_input_file(temp / "empty", "policy", 0), "");
}

TEST(InputFile, RefusesSpecialFilesAndSymlinksWithoutBlocking) {
  test::TempDir temp;
  std::string fifo = temp / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(error_of([&] { read_input_file(fifo, "journal", 100); }),
              HasSubstr("journal " + fifo + ": is a FIFO, not a regular file"));
  EXPECT_THAT(error_of([&] { read_input_file(temp.path(), "layout", 100); }),
              HasSubstr("is a directory"));
  EXPECT_THAT(error_of([&] { read_input_file("/dev/null", "layout", 100); }),
              HasSubstr("is a character device"));
  test::write_file(temp / "target", "x");
  fs::create_symlink(temp / "target", temp / "link");
  EXPECT_EQ(read_input_file(temp / "link", "sidecar", 10), "x");
  EXPECT_THAT(error_of([&] { read_input_file(temp / "link", "hook state", 10, false); }),
              HasSubstr("is a symlink"));
  // A missing file is a SystemError that keeps ENOENT.
  try {
    read_input_file(temp / "missing", "policy", 10);
    ADD_FAILURE() << "no error";
  } catch (const SystemError& error) {
    EXPECT_EQ(error.error_number(), ENOENT);
  }
  // An fd opened elsewhere (the journal's openat) is type-checked too.
  int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  UniqueFd owned(fd);
  EXPECT_THAT(error_of([&] { read_input_fd(owned.get(), fifo, "journal", 10); }),
              HasSubstr("is a FIFO"));
}

// A file that grows past the limit while being read is refused, not read without bound:
// /proc/self/status is a regular file whose stat size is 0 but has content.
TEST(InputFile, AFileLargerThanItsStatSizeIsStillBounded) {
  std::string text =
      read_input_fd(UniqueFd(::open("/proc/self/status", O_RDONLY | O_CLOEXEC)).get(),
                    "/proc/self/status", "status", 1 << 20);
  EXPECT_THAT(text, HasSubstr("Name:"));
  UniqueFd again(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  EXPECT_THAT(error_of([&] { read_input_fd(again.get(), "/proc/self/status", "status", 16); }),
              HasSubstr("more than the 16 allowed"));
}

TEST(Errors, ContextKeepsTheTypeAndErrno) {
  try {
    try {
      errno = EACCES;
      throw_errno("cannot open {}", "/x");
    } catch (const std::exception& error) {
      throw_with_context(error, "layer 2");
    }
  } catch (const SystemError& error) {
    EXPECT_EQ(error.error_number(), EACCES);
    EXPECT_THAT(error.what(), HasSubstr("layer 2: cannot open /x: "));
  }
  try {
    try {
      throw Error("bad magic");
    } catch (...) {
      rethrow_with_context("layer {} ({})", 3, "/l");
    }
  } catch (const SystemError&) {
    ADD_FAILURE() << "a plain Error must not become a SystemError";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "layer 3 (/l): bad magic");
  }
  try {
    try {
      throw std::out_of_range("index");
    } catch (const std::exception& error) {
      throw_with_context(error, "storage #1");
    }
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "storage #1: index");
  }
  // Nested contexts keep the errno all the way out.
  try {
    try {
      try {
        throw SystemError(ENOSPC, "write: No space left on device");
      } catch (...) {
        rethrow_with_context("{}", "inner");
      }
    } catch (...) {
      rethrow_with_context("{}", "outer");
    }
  } catch (const SystemError& error) {
    EXPECT_EQ(error.error_number(), ENOSPC);
    EXPECT_STREQ(error.what(), "outer: inner: write: No space left on device");
  }
}

TEST(Owners, DeletersFreeWhatTheyOwn) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  ASSERT_TRUE(ctx);
  EXPECT_EQ(EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr), 1);
  EvpMdPtr md(EVP_MD_fetch(nullptr, "sha512", nullptr));
  ASSERT_TRUE(md);
  EXPECT_EQ(EVP_MD_get_size(md.get()), 64);
  BlkidProbePtr probe(blkid_new_probe());
  EXPECT_TRUE(probe);
  BlkidProbePtr none(blkid_new_probe_from_filename("/nonexistent/evmdk"));
  EXPECT_FALSE(none);
}

}  // namespace
}  // namespace evmdk
