// The raw-image assembler without root: on whatever filesystem the temp directory is (ext4 or
// tmpfs here: no reflinks), reflink-only refuses, an allowed copy is byte-exact (holes where
// the filler is, zeros past a file's end, a filler holding data copied), and hostile pieces
// (a FIFO, pieces that do not tile the disk, an fd-passing descriptor) are refused by name
// with nothing left behind. The reflink paths are in raw_image_root_test.cpp.
#include "evmdk/host/compose/raw_image.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/descriptor.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

size_t entries(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

RawPiece piece(RawPieceKind kind, std::string name, std::string path, uint64_t disk,
               uint64_t length, uint64_t source = 0) {
  RawPiece p;
  p.kind = kind;
  p.name = std::move(name);
  p.path = std::move(path);
  p.disk_offset = disk;
  p.length = length;
  p.source_offset = source;
  return p;
}

std::string pattern(size_t size, char seed) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(seed + i * 7 % 251);
  return out;
}

class RawImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    layer_a = dir / "a.bin";
    layer_b = dir / "b.bin";
    filler = dir / "zero.img";
    test::write_file(layer_a, pattern(10000, 'a'));  // not a multiple of any block size
    test::write_file(layer_b, pattern(8192, 'b'));
    UniqueFd zero = open_or_throw(filler, O_WRONLY | O_CREAT, 0444);
    if (::ftruncate(zero.get(), 1 << 20) != 0) throw std::runtime_error("ftruncate");
    fs::create_directories(dir / "out");
  }
  // a (10000 bytes, extent 10240: 240 past its end), 3 KiB of filler, b from its byte 512.
  std::vector<RawPiece> disk() const {
    return {piece(RawPieceKind::Data, "layer 0", layer_a, 0, 10240),
            piece(RawPieceKind::Filler, "zero filler", filler, 10240, 3072),
            piece(RawPieceKind::Data, "layer 1", layer_b, 13312, 7680, 512)};
  }
  std::string expected() const {
    std::string out = pattern(10000, 'a');
    out += std::string(240 + 3072, '\0');
    out += pattern(8192, 'b').substr(512);
    return out;
  }

  test::TempDir dir;
  std::string layer_a, layer_b, filler;
};

TEST_F(RawImageTest, CopyWhenAllowedIsByteExactAndReported) {
  RawImageOptions options;
  options.policy = RawCopyPolicy::AllowCopy;
  std::string image = dir / "out/disk.img";
  RawImageReport report;
  try {
    report = assemble_raw_image(disk(), image, options);
  } catch (const Error& error) {
    FAIL() << error.what();
  }
  EXPECT_EQ(test::read_file(image), expected());
  EXPECT_EQ(report.size, expected().size());
  ASSERT_EQ(report.pieces.size(), 3u);
  EXPECT_EQ(report.pieces[0].copied_bytes + report.pieces[0].shared_bytes, 10000u);
  EXPECT_EQ(report.pieces[0].hole_bytes, 240u);
  EXPECT_EQ(report.pieces[1].hole_bytes, 3072u);
  EXPECT_EQ(report.pieces[1].copied_bytes, 0u);
  EXPECT_EQ(report.pieces[2].copied_bytes + report.pieces[2].shared_bytes, 7680u);
  EXPECT_EQ(report.shared_bytes + report.copied_bytes + report.hole_bytes, report.size);
  EXPECT_EQ(entries(dir / "out"), 1u);
  auto json = to_json(report);
  EXPECT_EQ(json["pieces"][1]["kind"], "filler");
  EXPECT_EQ(json["size"], report.size);
}

TEST_F(RawImageTest, ReflinkOnlyRefusesWhereBlocksCannotBeSharedAndLeavesNothing) {
  std::string image = dir / "out/disk.img";
  try {
    RawImageReport report = assemble_raw_image(disk(), image);
    // A temp directory on XFS or btrfs can share: then nothing was copied but partial blocks.
    EXPECT_TRUE(report.reflinked);
    EXPECT_EQ(test::read_file(image), expected());
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), AllOf(HasSubstr("layer 0 (" + layer_a + ")"),
                                    HasSubstr("cannot share its blocks into the raw image"),
                                    HasSubstr("allow copying")));
    EXPECT_EQ(entries(dir / "out"), 0u) << "a failed assembly left a file";
  }
}

TEST_F(RawImageTest, FillerHoldingDataIsCopiedSoTheImageStaysTheDisk) {
  UniqueFd fd = open_or_throw(filler, O_WRONLY);
  write_all(fd.get(), "XYZ", 3, filler, 100);
  RawImageOptions options;
  options.policy = RawCopyPolicy::AllowCopy;
  auto report = assemble_raw_image(disk(), dir / "out/disk.img", options);
  std::string want = expected();
  want.replace(10240 + 100, 3, "XYZ");
  EXPECT_EQ(test::read_file(dir / "out/disk.img"), want);
  EXPECT_GT(report.pieces[1].copied_bytes, 0u);
  EXPECT_THAT(report.pieces[1].copy_reason, HasSubstr("non-zero bytes"));
}

TEST_F(RawImageTest, HostilePiecesAreRefusedByName) {
  RawImageOptions options;
  options.policy = RawCopyPolicy::AllowCopy;
  std::string image = dir / "out/disk.img";
  auto expect_error = [&](std::vector<RawPiece> pieces, std::vector<std::string> words) {
    try {
      assemble_raw_image(pieces, image, options);
      ADD_FAILURE() << "accepted";
    } catch (const Error& error) {
      for (const auto& word : words) EXPECT_THAT(error.what(), HasSubstr(word));
    }
    EXPECT_EQ(entries(dir / "out"), 0u);
  };
  auto gap = disk();
  gap[2].disk_offset += 512;
  expect_error(gap, {"piece 2 (layer 1)", "starts at disk byte 13824", "end at 13312"});
  auto empty = disk();
  empty[1].length = 0;
  expect_error(empty, {"piece 1 (zero filler)", "is empty"});
  auto overflow = disk();
  overflow[2].source_offset = UINT64_MAX - 10;
  expect_error(overflow, {"piece 2 (layer 1): file range"});
  expect_error({}, {"no pieces"});

  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  auto fifo = disk();
  fifo[2].path = dir / "fifo";
  expect_error(fifo, {"layer 1", "is a FIFO, not a regular file"});

  auto grown = disk();
  grown[0].expected_size = 4096;
  expect_error(grown, {"layer 0", "is 10000 bytes but was 4096 when the disk was composed"});
}

TEST_F(RawImageTest, DescriptorPiecesNameComposesFilesAndMergeSplitExtents) {
  vmdk::Descriptor descriptor;
  std::string out = dir / "out";
  descriptor.extents = {{out + "/gpt-head.img", 2048, 0},
                        {layer_a, 10, 0},
                        {layer_a, 10, 10},   // continues the previous one: merged
                        {"zero.img", 4, 0},  // relative: the descriptor's directory
                        {layer_b, 16, 0},
                        {layer_a, 2, 0},  // the same file again: the same layer number
                        {out + "/gpt-tail.img", 33, 0}};
  auto pieces = raw_pieces_from_descriptor(descriptor, out);
  ASSERT_EQ(pieces.size(), 6u);
  EXPECT_EQ(pieces[0].kind, RawPieceKind::Metadata);
  EXPECT_EQ(pieces[0].name, "gpt-head");
  EXPECT_EQ(pieces[1].name, "layer 0 (" + layer_a + ")");
  EXPECT_EQ(pieces[1].length, 20u * 512);
  EXPECT_EQ(pieces[1].disk_offset, 2048u * 512);
  EXPECT_EQ(pieces[2].kind, RawPieceKind::Filler);
  EXPECT_EQ(pieces[2].path, out + "/zero.img");
  EXPECT_EQ(pieces[3].name, "layer 1 (" + layer_b + ")");
  EXPECT_EQ(pieces[4].name, "layer 0 (" + layer_a + ")");
  EXPECT_EQ(pieces[5].kind, RawPieceKind::Metadata);
  EXPECT_EQ(pieces[5].disk_offset, (2048u + 20 + 4 + 16 + 2) * 512);
  // A zero.img elsewhere is not compose's filler: it is data like any layer.
  descriptor.extents[3].path = layer_b + ".d/zero.img";
  EXPECT_EQ(raw_pieces_from_descriptor(descriptor, out)[2].kind, RawPieceKind::Data);

  vmdk::Descriptor fdset;
  fdset.extents = {{"/dev/fdset/1", 8, 0}};
  EXPECT_THROW(
      {
        try {
          raw_pieces_from_descriptor(fdset, out);
        } catch (const Error& error) {
          EXPECT_THAT(error.what(), HasSubstr("extent 1 (/dev/fdset/1): an fd-passing"));
          throw;
        }
      },
      Error);
  vmdk::Descriptor huge;
  huge.extents = {{layer_a, UINT64_MAX / 256, 0}};
  EXPECT_THROW(raw_pieces_from_descriptor(huge, out), Error);
}

TEST_F(RawImageTest, ProbeSaysWhyNot) {
  UniqueFd source = open_or_throw(layer_a, O_RDONLY);
  UniqueFd out = open_or_throw(dir / "out", O_RDONLY | O_DIRECTORY);
  ReflinkSupport support = reflink_possible(source.get(), out.get());
  std::string fs_name = filesystem_name(out.get());
  if (fs_name == "xfs" || fs_name == "btrfs") {
    GTEST_LOG_(INFO) << "temp directory on " << fs_name << ": " << support.reason;
  } else {
    EXPECT_FALSE(support.possible);
    EXPECT_THAT(support.reason, HasSubstr(fs_name));
  }
  EXPECT_EQ(entries(dir / "out"), 0u);
  UniqueFd empty = open_or_throw(dir / "empty", O_RDWR | O_CREAT, 0600);
  EXPECT_FALSE(reflink_possible(empty.get(), out.get()).possible);
}

}  // namespace
}  // namespace evmdk::host
