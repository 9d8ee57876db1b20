// The raw image of a composed disk on real loop-mounted filesystems: XFS (mkfs.xfs -m
// reflink=1) and btrfs share every layer's blocks into it (FIEMAP says SHARED, free space does
// not move for a 1 GiB layer set), and the image is byte for byte what `qemu-img convert`
// makes of disk.vmdk, for gpt and flat disks; ext4 and a layer on another filesystem get a
// refusal that says why, or a correct, reported copy when copying is allowed; a misaligned
// piece is copied, never misplaced; a failure leaves nothing in the output directory.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/raw_image.h"
#include "evmdk/vmdk/descriptor.h"
#include "layer_fixtures.h"
#include "loop_fixtures.h"
#include "volume_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

void expect_same_as_qemu(const std::string& descriptor, const std::string& image,
                         const std::string& scratch) {
  std::string converted = scratch + "/qemu-convert.raw";
  auto convert =
      test::run({"qemu-img", "convert", "-f", "vmdk", "-O", "raw", descriptor, converted});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  EXPECT_EQ(compare_files(image, converted), "")
      << image << " vs qemu-img convert of " << descriptor;
  fs::remove(converted);
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.insert(entry.path().filename());
  return out;
}

// A file of `size` pseudo-random bytes (splitmix64; random enough that nothing dedupes or
// compresses it, and much faster than /dev/urandom).
void write_random_file(const std::string& path, uint64_t size, uint64_t seed) {
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<uint64_t> words(kMiB / 8);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t done = 0; done < size; done += kMiB) {
    for (auto& word : words) {
      uint64_t z = (state += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      word = z ^ (z >> 31);
    }
    write_all(fd.get(), words.data(), static_cast<size_t>(std::min(kMiB, size - done)), path);
  }
}

// Small real layers for a gpt disk; the last one carries 1000 trailing bytes (as a verity
// tree would), so its extent ends in a partial block and 24 bytes past the file's end.
std::vector<std::string> make_small_layers(const std::string& dir) {
  std::vector<std::string> out;
  const char* uuids[] = {"11111111-2222-4333-8444-555555555501",
                         "11111111-2222-4333-8444-555555555502",
                         "11111111-2222-4333-8444-555555555503"};
  for (int i = 0; i < 3; ++i) {
    std::string name = "layer" + std::to_string(i);
    test::make_layer(dir, name, uuids[i], std::string(static_cast<size_t>(i) * 5000, 'x'));
    out.push_back(dir + "/" + name + ".erofs");
  }
  std::string tail(1000, '\x5a');
  UniqueFd fd = open_or_throw(out.back(), O_WRONLY | O_APPEND);
  write_all(fd.get(), tail.data(), tail.size(), out.back());
  return out;
}

ComposeResult compose_gpt(const std::vector<std::string>& layers, const std::string& out) {
  ComposeOptions options;
  options.mode = ComposeMode::Gpt;
  for (const auto& layer : layers) options.layers.push_back({layer, {}});
  options.output_dir = out;
  return compose(options);
}

ReflinkSupport probe(const std::string& layer, const std::string& dir) {
  UniqueFd source = open_or_throw(layer, O_RDONLY);
  UniqueFd target = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  return reflink_possible(source.get(), target.get());
}

const RawPieceReport* piece_named(const RawImageReport& report, const std::string& prefix) {
  for (const auto& piece : report.pieces) {
    if (piece.name.rfind(prefix, 0) == 0) return &piece;
  }
  return nullptr;
}

class RawImageReflinkRoot : public ::testing::TestWithParam<std::string> {};

TEST_P(RawImageReflinkRoot, GptDiskIsTheVmdksBytesWithEveryLayerShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto layers = make_small_layers(volume.path());
  for (const auto& layer : layers) expect_not_shared(layer);
  auto composed = compose_gpt(layers, volume / "out");
  auto support = probe(layers[0], volume / "out");
  EXPECT_TRUE(support.possible) << support.reason;

  std::string image = volume / "out/disk.img";
  RawImageReport report = assemble_raw_image_from_descriptor(volume / "out/disk.vmdk", image);
  expect_same_as_qemu(volume / "out/disk.vmdk", image, dir.path());

  EXPECT_TRUE(report.reflinked) << report.reflink_problem;
  EXPECT_EQ(report.filesystem, GetParam());
  EXPECT_EQ(report.size, composed.disk_sectors * 512);
  EXPECT_EQ(report.shared_bytes + report.copied_bytes + report.hole_bytes, report.size);
  for (size_t i = 0; i < layers.size(); ++i) {
    const RawPieceReport* piece = piece_named(report, "layer " + std::to_string(i));
    ASSERT_NE(piece, nullptr);
    EXPECT_EQ(piece->disk_offset, composed.layers[i].first_lba * 512);
    uint64_t size = fs::file_size(layers[i]);
    EXPECT_EQ(piece->shared_bytes, size / report.block_size * report.block_size);
    EXPECT_EQ(piece->copied_bytes, size % report.block_size);
    EXPECT_EQ(piece->hole_bytes, piece->length - size);  // the zeros past the file's end
    expect_shared(image, layers[i], *piece, report.block_size);
  }
  EXPECT_THAT(piece_named(report, "layer 2")->copy_reason,
              HasSubstr("last 1000 bytes are a partial block"));
  for (const auto& piece : report.pieces) {
    if (piece.kind == RawPieceKind::Filler) {
      EXPECT_EQ(piece.hole_bytes, piece.length) << piece.name;
      EXPECT_TRUE(
          fiemap(image,
                 piece.disk_offset / report.block_size * report.block_size + report.block_size,
                 piece.length > 2 * report.block_size ? piece.length - 2 * report.block_size : 0)
              .empty())
          << "the zero filler at " << piece.disk_offset << " is not a hole";
    }
    if (piece.kind == RawPieceKind::Metadata) {
      EXPECT_LT(piece.copied_bytes, 64 * 1024u) << piece.name << ": its zeros should be holes";
    }
  }
  EXPECT_EQ((fs::status(image).permissions() & fs::perms::all), fs::perms(0444));
  // The image no longer follows the layer file: rewriting a layer leaves it as it was.
  std::string before = test::read_bytes(image, composed.layers[0].first_lba * 512, 4096);
  test::write_bytes(layers[0], 0, std::string(4096, '\x77'));
  EXPECT_EQ(test::read_bytes(image, composed.layers[0].first_lba * 512, 4096), before);
}

TEST_P(RawImageReflinkRoot, FlatDiskIsTheVmdksBytesWithFsmetaAndBlobShared) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 512 * kMiB);
  auto fixture = test::make_multi_device(volume.path());
  test::set_slot(fixture, fixture.blob_blocks, fixture.fsmeta_blocks + 5);  // a 5-block gap
  ComposeOptions options;
  options.mode = ComposeMode::Flat;
  options.layers = {{fixture.fsmeta, {}}, {fixture.blob, {}}};
  options.output_dir = volume / "out";
  auto composed = compose(options);

  std::string image = volume / "out/disk.img";
  RawImageReport report = assemble_raw_image_from_descriptor(volume / "out/disk.vmdk", image);
  expect_same_as_qemu(volume / "out/disk.vmdk", image, dir.path());
  EXPECT_TRUE(report.reflinked) << report.reflink_problem;
  ASSERT_EQ(report.pieces.size(), 3u);  // fsmeta, the gap, the blob
  EXPECT_EQ(report.pieces[1].kind, RawPieceKind::Filler);
  EXPECT_EQ(report.pieces[1].hole_bytes, 5 * 4096u);
  EXPECT_EQ(report.pieces[2].disk_offset, (fixture.fsmeta_blocks + 5) * uint64_t{4096});
  expect_shared(image, fixture.fsmeta, report.pieces[0], report.block_size);
  expect_shared(image, fixture.blob, report.pieces[2], report.block_size);
  EXPECT_EQ(report.copied_bytes, 0u);
}

// About 1 GiB of layers (four 256 MiB EROFS images of random data) costs the filesystem
// (almost) nothing more as a raw image.
TEST_P(RawImageReflinkRoot, OneGiBLayerSetCostsLessThanOneMiB) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", GetParam(), 3072 * kMiB);
  std::vector<std::string> layers;
  for (int i = 0; i < 4; ++i) {
    std::string tree = dir / ("tree" + std::to_string(i));
    fs::create_directories(tree);
    write_random_file(tree + "/data", 256 * kMiB, static_cast<uint64_t>(i) + 1);
    std::string layer = volume / ("big" + std::to_string(i) + ".erofs");
    test::make_erofs(tree, layer);
    fs::remove_all(tree);
    layers.push_back(layer);
  }
  auto composed = compose_gpt(layers, volume / "out");
  uint64_t layer_bytes = 0;
  for (const auto& layer : layers) layer_bytes += fs::file_size(layer);
  ASSERT_GE(layer_bytes, 1024 * kMiB);

  uint64_t free_before = volume.free_bytes();
  auto start = std::chrono::steady_clock::now();
  RawImageReport report =
      assemble_raw_image_from_descriptor(volume / "out/disk.vmdk", volume / "out/disk.img");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t free_after = volume.free_bytes();
  std::printf("%s: %llu layer bytes shared in %.3f s; free space %llu -> %llu\n",
              GetParam().c_str(), static_cast<unsigned long long>(report.shared_bytes), seconds,
              static_cast<unsigned long long>(free_before),
              static_cast<unsigned long long>(free_after));
  EXPECT_TRUE(report.reflinked) << report.reflink_problem;
  EXPECT_EQ(report.shared_bytes, layer_bytes);
  EXPECT_LT(report.copied_bytes, 64 * 1024u);  // the GPT's non-zero blocks
  EXPECT_LT(free_before - std::min(free_before, free_after), kMiB);
  for (size_t i = 0; i < layers.size(); ++i) {
    const RawPieceReport* piece = piece_named(report, "layer " + std::to_string(i));
    ASSERT_NE(piece, nullptr);
    expect_shared(volume / "out/disk.img", layers[i], *piece, report.block_size);
  }
}

INSTANTIATE_TEST_SUITE_P(Filesystems, RawImageReflinkRoot, ::testing::Values("xfs", "btrfs"),
                         [](const auto& info) { return info.param; });

TEST(RawImageRoot, Ext4RefusesWithReasonAndCopiesWhenAllowed) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "ext4", 256 * kMiB);
  auto layers = make_small_layers(volume.path());
  compose_gpt(layers, volume / "out");
  auto support = probe(layers[0], volume / "out");
  EXPECT_FALSE(support.possible);
  EXPECT_THAT(support.reason, HasSubstr("(ext4) does not support reflinks"));
  auto before = names_in(volume / "out");

  try {
    assemble_raw_image_from_descriptor(volume / "out/disk.vmdk", volume / "out/disk.img");
    FAIL() << "ext4 cannot share blocks, yet the reflink-only assembly succeeded";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(),
                AllOf(HasSubstr("layer 0 (" + layers[0] + ")"), HasSubstr("ext4"),
                      HasSubstr("does not support reflinks"), HasSubstr("allow copying")));
  }
  EXPECT_EQ(names_in(volume / "out"), before) << "the failure left something behind";

  RawImageOptions copy;
  copy.policy = RawCopyPolicy::AllowCopy;
  RawImageReport report =
      assemble_raw_image_from_descriptor(volume / "out/disk.vmdk", volume / "out/disk.img", copy);
  expect_same_as_qemu(volume / "out/disk.vmdk", volume / "out/disk.img", dir.path());
  EXPECT_FALSE(report.reflinked);
  EXPECT_THAT(report.reflink_problem, AllOf(HasSubstr("layer 0"), HasSubstr("ext4")));
  EXPECT_EQ(report.shared_bytes, 0u);
  for (size_t i = 0; i < layers.size(); ++i) {
    const RawPieceReport* piece = piece_named(report, "layer " + std::to_string(i));
    ASSERT_NE(piece, nullptr);
    EXPECT_EQ(piece->copied_bytes, fs::file_size(layers[i])) << piece->name;
    EXPECT_THAT(piece->copy_reason, HasSubstr("copied: the image's filesystem (ext4)"));
  }
  auto after = names_in(volume / "out");
  before.insert("disk.img");
  EXPECT_EQ(after, before);
}

TEST(RawImageRoot, LayersOnAnotherFilesystemAreRefusedOrCopied) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume layer_volume(dir / "xfs.img", dir / "xfs", "xfs", 512 * kMiB);
  LoopVolume image_volume(dir / "btrfs.img", dir / "btrfs", "btrfs", 512 * kMiB);
  auto layers = make_small_layers(layer_volume.path());
  compose_gpt(layers, image_volume / "out");
  auto support = probe(layers[0], image_volume / "out");
  EXPECT_FALSE(support.possible);
  EXPECT_THAT(support.reason, HasSubstr("different filesystem (xfs"));
  auto before = names_in(image_volume / "out");
  try {
    assemble_raw_image_from_descriptor(image_volume / "out/disk.vmdk",
                                       image_volume / "out/disk.img");
    FAIL() << "blocks were shared across two filesystems";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), AllOf(HasSubstr("layer 0"), HasSubstr("different filesystem (xfs"),
                                    HasSubstr("than the image (btrfs")));
  }
  EXPECT_EQ(names_in(image_volume / "out"), before);

  RawImageOptions copy;
  copy.policy = RawCopyPolicy::AllowCopy;
  auto report = assemble_raw_image_from_descriptor(image_volume / "out/disk.vmdk",
                                                   image_volume / "out/disk.img", copy);
  expect_same_as_qemu(image_volume / "out/disk.vmdk", image_volume / "out/disk.img", dir.path());
  EXPECT_FALSE(report.reflinked);
  EXPECT_EQ(report.shared_bytes, 0u);
  uint64_t layer_bytes = 0;
  for (const auto& layer : layers) layer_bytes += fs::file_size(layer);
  uint64_t copied = 0;
  for (const auto& piece : report.pieces) {
    if (piece.kind == RawPieceKind::Data) copied += piece.copied_bytes;
  }
  EXPECT_EQ(copied, layer_bytes);
}

// A layer 512 bytes into the disk (a flat disk of 512-byte EROFS blocks can place one there):
// no block of it can be shared, so reflink-only refuses and naming why, and a copy puts every
// byte where the VMDK has it. A second layer read from file offset 512 at the same place in a
// block shares all its full blocks and copies only its partial first block.
TEST(RawImageRoot, MisalignedLayerIsCopiedNeverMisplaced) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto layers = make_small_layers(volume.path());
  std::string out = volume / "hand";
  fs::create_directories(out);
  {
    UniqueFd zero = open_or_throw(out + "/zero.img", O_WRONLY | O_CREAT, 0444);
    ASSERT_EQ(::ftruncate(zero.get(), 8192), 0);
  }
  uint64_t a = fs::file_size(layers[0]) / 512, b = fs::file_size(layers[1]) / 512;
  vmdk::Descriptor descriptor;
  descriptor.create_type = vmdk::CreateType::MonolithicFlat;
  descriptor.extents = {{out + "/zero.img", 1, 0},
                        {layers[0], a, 0},
                        {layers[1], b - 1, 1},
                        {out + "/zero.img", 7, 0}};
  vmdk::write_descriptor_file(out + "/disk.vmdk", descriptor);
  auto before = names_in(out);
  try {
    assemble_raw_image_from_descriptor(out + "/disk.vmdk", out + "/disk.img");
    FAIL() << "a misaligned layer was accepted for sharing";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(),
                AllOf(HasSubstr("layer 0"),
                      HasSubstr("disk offset 512 is not a multiple of the 4096-byte filesystem "
                                "block")));
  }
  EXPECT_EQ(names_in(out), before);

  RawImageOptions copy;
  copy.policy = RawCopyPolicy::AllowCopy;
  auto report = assemble_raw_image_from_descriptor(out + "/disk.vmdk", out + "/disk.img", copy);
  expect_same_as_qemu(out + "/disk.vmdk", out + "/disk.img", dir.path());
  ASSERT_EQ(report.pieces.size(), 4u);
  const auto& misaligned = report.pieces[1];
  EXPECT_EQ(misaligned.shared_bytes, 0u);
  EXPECT_EQ(misaligned.copied_bytes, a * 512);
  EXPECT_THAT(misaligned.copy_reason, HasSubstr("disk offset 512 is not a multiple"));
  const auto& same_phase = report.pieces[2];
  EXPECT_EQ(same_phase.copied_bytes, 4096u - 512);
  EXPECT_EQ(same_phase.shared_bytes, (b - 1) * 512 - (4096 - 512));
  expect_shared(out + "/disk.img", layers[1], same_phase, report.block_size);
  EXPECT_FALSE(report.reflinked);
  EXPECT_THAT(report.reflink_problem, HasSubstr("layer 0"));
}

// A layer that is no longer the file composed (its size changed) is refused before any of
// its blocks are taken, and the failed assembly leaves nothing.
TEST(RawImageRoot, ChangedLayerIsRefusedAndLeavesNothing) {
  EVMDK_REQUIRE(missing_prerequisites());
  test::TempDir dir;
  LoopVolume volume(dir / "volume.img", dir / "mnt", "xfs", 512 * kMiB);
  auto layers = make_small_layers(volume.path());
  auto composed = compose_gpt(layers, volume / "out");
  auto pieces = raw_pieces_from_descriptor(*composed.descriptor, volume / "out");
  for (auto& piece : pieces) {
    for (const auto& layer : composed.layers) {
      if (piece.path == layer.path) piece.expected_size = layer.identity.size;
    }
  }
  std::string extra(4096, 'e');
  {
    UniqueFd fd = open_or_throw(layers[1], O_WRONLY | O_APPEND);
    write_all(fd.get(), extra.data(), extra.size(), layers[1]);
  }
  auto before = names_in(volume / "out");
  try {
    assemble_raw_image(pieces, volume / "out/disk.img");
    FAIL() << "a grown layer was assembled";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), AllOf(HasSubstr("layer 1"), HasSubstr("when the disk was composed")));
  }
  EXPECT_EQ(names_in(volume / "out"), before);
}

}  // namespace
}  // namespace evmdk::host
