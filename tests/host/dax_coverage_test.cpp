// DAX coverage of real mkfs.erofs images: each file's layout as dump.erofs reports it, the
// DAX-served share per build option, hard links once, nested and multi-block directories; and
// hostile images (truncated, a dirent outside, a directory cycle, a huge size) give errors
// naming the layer.
#include "evmdk/host/erofs/dax_coverage.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <regex>

#include <fmt/format.h>

#include "evmdk/error.h"
#include "evmdk/ondisk/erofs_inode.h"
#include "layer_fixtures.h"
#include "real_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
namespace od = evmdk::ondisk;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen());
  return out;
}

DaxCoverage coverage_of(const std::string& image) {
  UniqueFd fd = open_or_throw(image, O_RDONLY);
  struct stat st {};
  EXPECT_EQ(::fstat(fd.get(), &st), 0);
  return dax_coverage(fd.get(), 0, static_cast<uint64_t>(st.st_size), "layer " + image);
}

std::string coverage_error(const std::string& image) {
  try {
    coverage_of(image);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

// "Layout: N" of dump.erofs --path=<file>.
int dump_layout(const std::string& image, const std::string& path) {
  auto result = test::run({"dump.erofs", "--path=" + path, image});
  std::smatch m;
  if (result.exit_code != 0 || !std::regex_search(result.out, m, std::regex("Layout: ([0-9]+)"))) {
    ADD_FAILURE() << "dump.erofs --path=" << path << " " << image << ": " << result.out
                  << result.err;
    return -1;
  }
  return std::stoi(m[1]);
}

class DaxCoverageTest : public ::testing::Test {
 protected:
  void SetUp() override { EVMDK_REQUIRE_TOOLS("mkfs.erofs", "dump.erofs"); }

  // Files: two with tails (10000 random, 20000 text), one of 8 KiB, a hard link, nested dirs.
  std::string tree() {
    std::string root = dir / "tree";
    test::make_tree(root, {{"rand", random_bytes(10000, 1)},
                           {"a/b/c/text", std::string(20000, 'x')},
                           {"a/eight_k", random_bytes(8192, 2)},
                           {"empty/", ""}});
    fs::create_hard_link(root + "/rand", root + "/a/b/hard");
    return root;
  }
  std::string build(const std::string& name, const std::vector<std::string>& args) {
    std::string image = dir / name;
    test::make_erofs(tree_, image, {}, args);
    return image;
  }
  // The file layouts dump.erofs reports, summed like by_layout.
  void expect_layouts_match_dump(const std::string& image, const DaxCoverage& c) {
    std::array<uint64_t, 5> files{};
    for (const char* path : {"/rand", "/a/b/c/text", "/a/eight_k"}) {
      int layout = dump_layout(image, path);
      ASSERT_GE(layout, 0);
      ASSERT_LE(layout, 4);
      ++files[static_cast<size_t>(layout)];
    }
    for (size_t i = 0; i < 5; ++i) EXPECT_EQ(c.by_layout[i].files, files[i]) << "layout " << i;
  }

  test::TempDir dir;
  std::string tree_;
  static constexpr uint64_t kFileBytes = 10000 + 20000 + 8192;
};

TEST_F(DaxCoverageTest, NoInlineDataIsFullyDaxServed) {
  tree_ = tree();
  auto image = build("noinline.erofs", {"-Enoinline_data"});
  auto c = coverage_of(image);
  EXPECT_EQ(c.block_size, 4096u);
  EXPECT_EQ(c.files, 3u) << "the hard link counts once";
  EXPECT_EQ(c.file_bytes, kFileBytes);
  EXPECT_EQ(c.by_layout[0].files, 3u);
  EXPECT_EQ(c.dax.bytes, kFileBytes);
  EXPECT_DOUBLE_EQ(c.dax_percent(), 100.0);
  EXPECT_TRUE(c.causes().empty());
  EXPECT_EQ(c.directories, 5u);  // /, a, a/b, a/b/c, empty
  EXPECT_TRUE(c.unreadable.empty());
  EXPECT_EQ(dax_coverage_warning(c, "layer x"), std::nullopt);
  expect_layouts_match_dump(image, c);
  EXPECT_THAT(dax_coverage_summary(c), HasSubstr("DAX serves 100.0% of 38192 file bytes"));
}

TEST_F(DaxCoverageTest, DefaultBuildInlinesTailsAndLosesThoseFilesWhole) {
  tree_ = tree();
  auto image = build("default.erofs", {});
  auto c = coverage_of(image);
  expect_layouts_match_dump(image, c);
  // The 8 KiB file has no tail: DAX. The two others are inline (whole files lost).
  EXPECT_EQ(c.inline_tail.files, 2u);
  EXPECT_EQ(c.inline_tail.bytes, 30000u);
  EXPECT_EQ(c.dax.files, 1u);
  EXPECT_EQ(c.dax.bytes, 8192u);
  EXPECT_NEAR(c.dax_percent(), 100.0 * 8192 / kFileBytes, 0.01);
  ASSERT_EQ(c.causes().size(), 1u);
  EXPECT_EQ(c.causes()[0].fix, "-Enoinline_data");
  auto warning = dax_coverage_warning(c, "layer default.erofs");
  ASSERT_TRUE(warning);
  EXPECT_THAT(*warning, HasSubstr("layer default.erofs"));
  EXPECT_THAT(*warning, HasSubstr("-Enoinline_data"));
  auto json = to_json(c);
  EXPECT_EQ(json["by_layout"]["flat_inline"]["files"], 2u);
  EXPECT_EQ(json["causes"][0]["cause"], "inline_tail");
}

TEST_F(DaxCoverageTest, Lz4CompressesCompressibleFilesOnlyAndThoseAreNotDax) {
  tree_ = tree();
  auto image = build("lz4.erofs", {"-zlz4", "-Enoinline_data"});
  auto c = coverage_of(image);
  expect_layouts_match_dump(image, c);
  EXPECT_EQ(dump_layout(image, "/a/b/c/text"), 3) << "compressible text is compressed";
  EXPECT_EQ(dump_layout(image, "/rand"), 0) << "random data is stored plain";
  EXPECT_EQ(c.compressed.files, 1u);
  EXPECT_EQ(c.compressed.bytes, 20000u);
  EXPECT_EQ(c.dax.bytes, 10000u + 8192u);
  ASSERT_FALSE(c.causes().empty());
  EXPECT_EQ(c.causes()[0].fix, "no -z compression");
  EXPECT_TRUE(dax_coverage_warning(c, "lz4"));
}

TEST_F(DaxCoverageTest, CompressedOnlyLayerIsZeroPercent) {
  tree_ = dir / "text";
  test::make_tree(tree_, {{"one", std::string(50000, 'a')}, {"two/three", std::string(9000, 'b')}});
  auto image = build("text.erofs", {"-zlz4"});
  auto c = coverage_of(image);
  EXPECT_EQ(c.files, 2u);
  EXPECT_EQ(c.compressed.files, 2u);
  EXPECT_DOUBLE_EQ(c.dax_percent(), 0.0);
  EXPECT_EQ(dump_layout(image, "/one"), 3);
}

TEST_F(DaxCoverageTest, ChunkBasedFilesAreDax) {
  tree_ = tree();
  auto image = build("chunk.erofs", {"--chunksize=4096"});
  auto c = coverage_of(image);
  expect_layouts_match_dump(image, c);
  EXPECT_EQ(c.by_layout[4].files, 3u);
  EXPECT_DOUBLE_EQ(c.dax_percent(), 100.0);
}

TEST_F(DaxCoverageTest, DirectoryWithManyBlocksOfEntriesIsReadWhole) {
  tree_ = dir / "wide";
  std::map<std::string, std::string> files;
  for (int i = 0; i < 300; ++i) {
    files[fmt::format("d/file-with-a-rather-long-name-{:04}", i)] = std::string(5000, 'q');
  }
  test::make_tree(tree_, files);
  auto image = build("wide.erofs", {"-Enoinline_data"});
  auto result = test::run({"dump.erofs", "--path=/d", image});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(result.out, m, std::regex("Size: ([0-9]+)"))) << result.out;
  ASSERT_GT(std::stoull(m[1]), 2u * 4096) << "the directory spans more than two blocks";
  auto c = coverage_of(image);
  EXPECT_EQ(c.files, 300u);
  EXPECT_EQ(c.file_bytes, 300u * 5000);
}

TEST_F(DaxCoverageTest, ExtendedInodesAndXattrsBeforeInlineDirectoryData) {
  tree_ = tree();
  // Differing mtimes (no -T 0) give extended 64-byte inodes; xattrs sit between an inode and
  // its inline directory entries.
  ASSERT_EQ(::setxattr((tree_ + "/a").c_str(), "user.evmdk", "some value", 10, 0), 0);
  ASSERT_EQ(::setxattr((tree_ + "/a/b").c_str(), "user.other", "x", 1, 0), 0);
  ASSERT_EQ(::setxattr((tree_ + "/rand").c_str(), "user.evmdk", "file", 4, 0), 0);
  std::string image = dir / "extended.erofs";
  auto made = test::run({"mkfs.erofs", "-Enoinline_data", image, tree_});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto dump = test::run({"dump.erofs", "--path=/a", image});
  EXPECT_THAT(dump.out, HasSubstr("Inode size: 64"));
  EXPECT_THAT(dump.out, ::testing::Not(HasSubstr("Xattr size: 0")));
  auto c = coverage_of(image);
  expect_layouts_match_dump(image, c);
  EXPECT_EQ(c.files, 3u);
  EXPECT_EQ(c.directories, 5u);
  EXPECT_DOUBLE_EQ(c.dax_percent(), 100.0);
}

TEST_F(DaxCoverageTest, WorksAtAnOffsetInsideALargerFile) {
  tree_ = tree();
  auto image = build("inner.erofs", {"-Enoinline_data"});
  std::string bytes = test::read_file(image);
  std::string outer = dir / "outer.img";
  test::write_file(outer, std::string(1 << 20, '\x55') + bytes + std::string(4096, '\x66'));
  UniqueFd fd = open_or_throw(outer, O_RDONLY);
  auto c = dax_coverage(fd.get(), 1 << 20, bytes.size(), "partition 1");
  EXPECT_EQ(c.files, 3u);
  EXPECT_DOUBLE_EQ(c.dax_percent(), 100.0);
}

// containerd's tar-index layers: 512-byte blocks, so nothing is DAX-served whatever the files.
TEST(DaxCoverageRealFixtures, ContainerdTarIndexLayersHaveNoDax) {
  for (int n = 1; n <= test::kTarIndexLayers; ++n) {
    SCOPED_TRACE(n);
    auto c = coverage_of(test::tarindex_layer(n));
    EXPECT_EQ(c.block_size, 512u);
    EXPECT_GT(c.files, 0u);
    EXPECT_EQ(c.dax.files, 0u);
    ASSERT_EQ(c.causes().size(), 1u);
    EXPECT_EQ(c.causes()[0].cause, "block_size");
    EXPECT_EQ(c.causes()[0].bytes, c.file_bytes);
    auto warning = dax_coverage_warning(c, "layer " + std::to_string(n));
    ASSERT_TRUE(warning);
    EXPECT_THAT(*warning, HasSubstr("512-byte blocks (fix: 4 KiB blocks"));
  }
}

// erofs-utils 1.8.10 layers: file and directory counts as dump.erofs -S reports them.
TEST(DaxCoverageRealFixtures, ErofsUtils18LayersMatchDumpStatistics) {
  EVMDK_REQUIRE_TOOLS("dump.erofs");
  for (const char* name : {"base", "middle", "top"}) {
    SCOPED_TRACE(name);
    std::string image = test::fixtures_dir() + "/erofs-utils-1.8.10/" + name + ".erofs";
    auto c = coverage_of(image);
    auto stats = test::run({"dump.erofs", "-S", image});
    std::smatch files, dirs;
    ASSERT_TRUE(std::regex_search(stats.out, files, std::regex("regular file count:\\s+([0-9]+)")))
        << stats.out;
    ASSERT_TRUE(std::regex_search(stats.out, dirs, std::regex("directory count:\\s+([0-9]+)")));
    EXPECT_EQ(c.files, std::stoull(files[1]));
    EXPECT_EQ(c.directories, std::stoull(dirs[1]));
    EXPECT_DOUBLE_EQ(c.dax_percent(), 100.0);
  }
}

// Hostile images: patched fields of a real image.
class DaxCoverageHostileTest : public DaxCoverageTest {
 protected:
  void SetUp() override {
    DaxCoverageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tree_ = tree();
    image = build("hostile.erofs", {"-Enoinline_data"});
    std::string sb = test::read_bytes(image, 1024, 128);
    auto root = od::parse_erofs_tree_root(od::byte_view(sb), "sb");
    root_inode_at = uint64_t{root.meta_blkaddr} * 4096 + root.root_nid * 32;
    root_nid = root.root_nid;
    std::string raw = test::read_bytes(image, root_inode_at, 64);
    root_inode = od::parse_erofs_inode(od::byte_view(raw), "root");
    // mkfs.erofs inlines small directories even with -Enoinline_data (that option is about
    // files): the entries then follow the inode and its xattrs.
    ASSERT_LT(root_inode.size, 4096u);
    root_block_at = root_inode.layout == 2 ? root_inode_at + root_inode.header_size()
                                           : uint64_t{root_inode.raw_blkaddr} * 4096;
  }
  // The byte offset of the root directory's entry `name`.
  uint64_t dirent_at(const std::string& name) {
    std::string block = test::read_bytes(image, root_block_at, root_inode.size);
    auto entries = od::parse_erofs_dir_block(od::byte_view(block), "root");
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].name == name) return root_block_at + i * 12;
    }
    ADD_FAILURE() << "no entry " << name;
    return 0;
  }
  void patch(uint64_t offset, uint64_t value, int width) {
    std::string field(static_cast<size_t>(width), '\0');
    test::put_le(field, 0, value, width);
    test::write_bytes(image, offset, field);
  }
  std::string image;
  uint64_t root_inode_at = 0, root_block_at = 0, root_nid = 0;
  od::ErofsInode root_inode;
};

TEST_F(DaxCoverageHostileTest, TruncatedImageNamesTheLayer) {
  ::truncate(image.c_str(), static_cast<off_t>(root_inode_at + 20));
  EXPECT_THAT(coverage_error(image), HasSubstr("layer " + image + ": DAX coverage: "));
  EXPECT_THAT(coverage_error(image), HasSubstr("outside the image"));
}

TEST_F(DaxCoverageHostileTest, DirentPointingOutsideTheImage) {
  patch(dirent_at("rand"), uint64_t{1} << 40, 8);
  auto error = coverage_error(image);
  EXPECT_THAT(error, HasSubstr("layer " + image + ": DAX coverage: inode nid 1099511627776 of /rand"));
  EXPECT_THAT(error, HasSubstr("lies outside the image"));
}

TEST_F(DaxCoverageHostileTest, DirectoryCycleIsAnError) {
  patch(dirent_at("a"), root_nid, 8);
  EXPECT_THAT(coverage_error(image), HasSubstr("/a: directory nid " + std::to_string(root_nid) +
                                               " is reached twice (a directory cycle)"));
}

TEST_F(DaxCoverageHostileTest, HugeDirectorySizeIsAnError) {
  if (root_inode.extended) {
    patch(root_inode_at + 8, uint64_t{1} << 62, 8);
  } else {
    patch(root_inode_at + 8, 0xFFFFF000u, 4);
  }
  EXPECT_THAT(coverage_error(image), HasSubstr("directory / (nid"));
  EXPECT_THAT(coverage_error(image), HasSubstr("lies outside the image"));
}

TEST_F(DaxCoverageHostileTest, HugeFileSizeIsAnError) {
  std::string entry = test::read_bytes(image, dirent_at("rand"), 8);
  uint64_t rand_at = uint64_t{0} + od::load_le64(entry.data()) * 32 +
                     (root_inode_at - root_nid * 32);
  auto inode = od::parse_erofs_inode(od::byte_view(test::read_bytes(image, rand_at, 64)), "rand");
  if (inode.extended) {
    patch(rand_at + 8, ~uint64_t{0}, 8);
  } else {
    patch(rand_at + 8, 0xFFFFFFFFu, 4);
  }
  auto error = coverage_error(image);
  EXPECT_THAT(error, HasSubstr("/rand: data of"));
  EXPECT_THAT(error, HasSubstr("lies outside the image"));
}

TEST_F(DaxCoverageHostileTest, CompressedDirectoryIsReportedNotGuessed) {
  std::string entry = test::read_bytes(image, dirent_at("a"), 8);
  uint64_t a_at = od::load_le64(entry.data()) * 32 + (root_inode_at - root_nid * 32);
  std::string format = test::read_bytes(image, a_at, 2);
  uint16_t value = static_cast<uint16_t>(od::load_le16(format.data()) & ~0xE) | (3 << 1);
  patch(a_at, value, 2);
  auto c = coverage_of(image);
  ASSERT_EQ(c.unreadable.size(), 1u);
  EXPECT_EQ(c.unreadable[0], "/a: cannot read (compressed directory)");
  EXPECT_EQ(c.files, 1u) << "only /rand: what lies below /a is not counted";
  EXPECT_THAT(dax_coverage_summary(c), HasSubstr("not counted: /a: cannot read"));
  EXPECT_TRUE(dax_coverage_warning(c, "layer"));
}

TEST_F(DaxCoverageHostileTest, NotErofsAndDeepLimit) {
  test::write_file(dir / "zeros", std::string(8192, '\0'));
  EXPECT_THAT(coverage_error(dir / "zeros"), HasSubstr("not an EROFS image"));
  UniqueFd fd = open_or_throw(image, O_RDONLY);
  DaxCoverageLimits limits;
  limits.max_depth = 2;
  try {
    dax_coverage(fd.get(), 0, fs::file_size(image), "layer L", limits);
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("layer L: DAX coverage: /a/b: directories nested deeper than 2"));
  }
}

}  // namespace
}  // namespace evmdk::host
