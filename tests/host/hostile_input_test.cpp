// Issue 13: hostile mount lists, layers, verity data and descriptors get an error naming the
// input at fault — never a crash, a hang, a runaway allocation or a read of an unrelated file.
// Every CLI run here is bounded: SIGKILL after a timeout and a 1 GiB address-space limit, so a
// regression shows up as a failed assertion (exit 137 / bad_alloc), not a stuck test run.
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <algorithm>

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evmdk/checksum.h"
#include "layer_fixtures.h"
#include "real_fixtures.h"

namespace evmdk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

// The CLI under `timeout -s KILL` and `prlimit --as`.
test::CommandResult bounded_cli(const std::vector<std::string>& args, const std::string& input = {},
                                int seconds = 20) {
#if defined(__SANITIZE_ADDRESS__)
  // An ASan build's command reserves terabytes of shadow address space, so an address-space
  // limit would stop it at start; ASan's own RSS limit bounds it instead (1 GiB, as below).
  std::vector<std::string> argv{"timeout", "-s", "KILL", std::to_string(seconds), "env",
                                "ASAN_OPTIONS=detect_leaks=1:hard_rss_limit_mb=1024:allocator_may_return_null=0",
                                test::cli_path()};
#else
  std::vector<std::string> argv{"timeout", "-s", "KILL", std::to_string(seconds), "prlimit",
                                "--as=1073741824", test::cli_path()};
#endif
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv, input);
}

class HostileInputTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  std::string state() const { return dir / "state"; }
  test::CommandResult hook(const std::string& mounts) {
    return bounded_cli({"hook", "--id", "c1", "--state-dir", state(), "--mounts", "-"}, mounts);
  }
};

// ---- item 1: template arithmetic ----

// {{ overlay 18446744073709551615 0 }}: the end index + 1 wrapped to 0 and the hook read the
// front of an empty list (SIGSEGV), in uidmap= and in X-containerd.mkdir.path= alike.
TEST_F(HostileInputTest, WrappingOverlayTemplateInAnOptionIsAnErrorNamingMountOptionTemplate) {
  for (const std::string option : {"uidmap={{ overlay 18446744073709551615 0 }}",
                                   "X-containerd.mkdir.path={{ overlay 18446744073709551615 0 }}/a:0755"}) {
    auto result = hook(R"([{"type":"erofs","source":"/s/1/layer.erofs"},
      {"type":"erofs","source":"/s/2/layer.erofs"},
      {"type":"format/overlay","source":"overlay",
       "options":["lowerdir={{ overlay 0 1 }}",")" + option + R"("]}])");
    EXPECT_EQ(result.exit_code, 1) << option << "\n" << result.err;
    EXPECT_THAT(result.err, AllOf(HasSubstr("mount 2 (type 'format/overlay') option '" + option + "'"),
                                  HasSubstr("template '{{ overlay 18446744073709551615 0 }}'"),
                                  HasSubstr("refers to mount 18446744073709551615, which does not exist")))
        << option;
    EXPECT_FALSE(fs::exists(state())) << "nothing may be written";
  }
}

// With an ext4 upper the same template in lowerdir= was accepted: storages with only the upper
// and a guest lowerdir of "{{ overlay 1 0 }}".
TEST_F(HostileInputTest, WrappingOverlayTemplateInLowerdirIsRefusedNotAccepted) {
  auto result = hook(R"([{"type":"mkfs/ext4","source":"/s/rw.img","options":["X-containerd.mkfs.size=67108864"]},
    {"type":"format/mkdir/overlay","source":"overlay","options":["workdir={{ mount 0 }}/work",
     "upperdir={{ mount 0 }}/upper","lowerdir={{ overlay 18446744073709551615 0 }}"]}])");
  EXPECT_EQ(result.exit_code, 1) << result.out;
  EXPECT_THAT(result.err, AllOf(HasSubstr("mount 1 (type 'format/mkdir/overlay') option 'lowerdir="),
                                HasSubstr("template '{{ overlay 18446744073709551615 0 }}'"),
                                HasSubstr("which does not exist")));
  EXPECT_THAT(result.out, Not(HasSubstr("overlay 1 0")));
}

// lowerdir={{ overlay 0 4000000000 }} built the whole index list first (~1 GiB, then
// std::bad_alloc; toward 32 GiB without a limit). Under a 1 GiB address-space limit it must
// fail at once, naming the template, before any allocation of that size.
TEST_F(HostileInputTest, HugeOverlayRangeIsRefusedBeforeAnyAllocation) {
  for (const std::string option : {"lowerdir={{ overlay 0 4000000000 }}", "uidmap={{ overlay 4000000000 0 }}"}) {
    std::string lowerdir = option.rfind("lowerdir", 0) == 0 ? "" : R"("lowerdir={{ mount 0 }}",)";
    auto result = hook(R"([{"type":"erofs","source":"/s/1/layer.erofs"},
      {"type":"format/overlay","source":"overlay","options":[)" + lowerdir + "\"" + option + "\"]}]");
    EXPECT_EQ(result.exit_code, 1) << option << "\n" << result.err;
    EXPECT_THAT(result.err, AllOf(HasSubstr("mount 1 (type 'format/overlay') option '"),
                                  HasSubstr("refers to mount 4000000000, which does not exist (the list has 2 mounts")))
        << option;
    EXPECT_THAT(result.err, Not(HasSubstr("bad_alloc")));
  }
}

// ---- item 2: special files never block a command ----

class HostileFilesTest : public HostileInputTest {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-0000000000d1");
    fifo = dir / "fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  }
  // A FIFO must be refused at once, naming it and its type: before the fix `open(O_RDONLY)`
  // blocked forever (the timeout kills the command: exit 137).
  static void expect_fifo_refused(const test::CommandResult& result, const std::string& fifo,
                                  const std::string& what) {
    EXPECT_NE(result.exit_code, 137) << what << ": hung on the FIFO";
    EXPECT_NE(result.exit_code, 0) << what;
    EXPECT_THAT(result.err, AllOf(HasSubstr(fifo), HasSubstr("is a FIFO"))) << what;
  }
  std::string fifo;
};

TEST_F(HostileFilesTest, FifoAsALayerOrDescriptorIsRefusedByInspectComposeLintMap) {
  expect_fifo_refused(bounded_cli({"inspect", fifo}, {}, 10), fifo, "inspect");
  expect_fifo_refused(bounded_cli({"compose", "-o", dir / "out", fifo}, {}, 10), fifo, "compose");
  expect_fifo_refused(bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "top.erofs", fifo}, {}, 10),
                      fifo, "compose of a second layer");
  expect_fifo_refused(bounded_cli({"lint", fifo}, {}, 10), fifo, "lint of a FIFO descriptor");
  expect_fifo_refused(bounded_cli({"map", fifo}, {}, 10), fifo, "map of a FIFO descriptor");
  expect_fifo_refused(bounded_cli({"verity", "format", fifo}, {}, 10), fifo, "verity format");
}

TEST_F(HostileFilesTest, FifoAsAHookLayerOrDeviceBlobIsRefusedNamingTheMount) {
  auto layer = hook(R"([{"type":"erofs","source":")" + fifo + R"("}])");
  expect_fifo_refused(layer, fifo, "hook layer");
  EXPECT_THAT(layer.err, HasSubstr("mount 0 (type 'erofs')"));
  auto device = hook(R"([{"type":"erofs","source":")" + dir / "top.erofs" +
                     R"(","options":["device=)" + fifo + R"("]}])");
  expect_fifo_refused(device, fifo, "hook device= blob");
  EXPECT_THAT(device.err, HasSubstr("device= blob"));
}

// A descriptor's extent file that is a FIFO: lint reports it and verify refuses it, neither
// hangs. (verify reads only what layout.json lists, so the FIFO replaces a listed layer.)
TEST_F(HostileFilesTest, FifoAsAnExtentFileIsReportedByLintAndVerify) {
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000d2");
  auto composed = bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  fs::remove(dir / "base.erofs");
  ASSERT_EQ(::mkfifo((dir / "base.erofs").c_str(), 0600), 0);
  std::string base = dir / "base.erofs";
  auto lint = bounded_cli({"lint", dir / "out/disk.vmdk"}, {}, 10);
  EXPECT_NE(lint.exit_code, 137) << "lint hung on the FIFO extent";
  EXPECT_THAT(lint.out + lint.err, AllOf(HasSubstr(base), HasSubstr("FIFO")));
  auto verify = bounded_cli({"verify", dir / "out"}, {}, 10);
  expect_fifo_refused(verify, base, "verify");
}

// ---- item 4: what QEMU opens is what was probed ----

TEST_F(HostileFilesTest, SymlinkedLayerIsRecordedByItsResolvedPath) {
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000d3");
  fs::create_symlink(dir / "top.erofs", dir / "link.erofs");
  auto composed = bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "link.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  std::string descriptor = test::read_file(dir / "out/disk.vmdk");
  std::string layout = test::read_file(dir / "out/layout.json");
  std::string resolved = fs::canonical(dir / "top.erofs").string();
  EXPECT_THAT(descriptor, HasSubstr("\"" + resolved + "\""));
  EXPECT_THAT(descriptor, Not(HasSubstr("link.erofs")));
  EXPECT_THAT(layout, Not(HasSubstr("link.erofs")));
  // Retargeting the link afterwards changes nothing the guest reads.
  fs::remove(dir / "link.erofs");
  fs::create_symlink("/etc/hostname", dir / "link.erofs");
  EXPECT_EQ(bounded_cli({"verify", dir / "out"}).exit_code, 0);
}

TEST_F(HostileFilesTest, BlockDeviceAsALayerIsRefused) {
  std::string device;
  for (const auto& entry : fs::directory_iterator("/dev")) {
    if (entry.is_block_file()) {
      device = entry.path().string();
      break;
    }
  }
  if (device.empty()) GTEST_SKIP() << "no block device node in /dev";
  auto result = bounded_cli({"compose", "-o", dir / "out", device}, {}, 10);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr(device), HasSubstr("is a block device, not a regular file")));
}

// A layer file replaced (new inode), or rewritten in place with another image of the same
// size, after compose: verify names the layer instead of passing.
TEST_F(HostileFilesTest, VerifyDetectsALayerFileThatIsNoLongerTheOneComposed) {
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000d4");
  test::make_layer(dir.path(), "other", "00000000-0000-4000-8000-0000000000d5");
  auto composed = bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  ASSERT_EQ(bounded_cli({"verify", dir / "out"}).exit_code, 0);
  std::string base = fs::canonical(dir / "base.erofs").string();
  fs::rename(dir / "other.erofs", dir / "base.erofs");  // a new inode under the composed name
  auto replaced = bounded_cli({"verify", dir / "out"});
  EXPECT_EQ(replaced.exit_code, 1);
  EXPECT_THAT(replaced.err, AllOf(HasSubstr("layer 1 (" + base + "): the file is no longer the one composed"),
                                  HasSubstr("device:inode")));
}

// ---- item 5: verify is not a file-reading oracle ----

TEST_F(HostileFilesTest, VerifyRefusesAHandWrittenDescriptorWithoutLayout) {
  std::string descriptor = dir / "evil.vmdk";
  test::write_file(descriptor, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                               "createType=\"monolithicFlat\"\n\nRW 8 FLAT \"/etc/shadow\" 0\n");
  auto result = bounded_cli({"verify", "--digest", "sha256", descriptor});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr(descriptor), HasSubstr("has no layout.json"),
                                HasSubstr("--trust-descriptor")));
  EXPECT_THAT(result.out, Not(HasSubstr("sha256")));
}

TEST_F(HostileFilesTest, VerifyReadsOnlyFilesLayoutJsonLists) {
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000d6");
  auto composed = bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  std::string base = fs::canonical(dir / "base.erofs").string();
  std::string text = test::read_file(dir / "out/disk.vmdk");
  text.replace(text.find(base), base.size(), "/etc/shadow");
  test::write_file(dir / "out/disk.vmdk", text);
  auto result = bounded_cli({"verify", "--digest", "sha256", dir / "out"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr("names /etc/shadow, which"), HasSubstr("layout.json does not list"),
                                HasSubstr("refusing to read it")));
}

// Review finding: a layout.json that others could write vouches for nothing.
TEST_F(HostileFilesTest, VerifyRefusesALayoutOthersCouldHaveWritten) {
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000d7");
  auto composed = bounded_cli({"compose", "--mode", "gpt", "-o", dir / "out", dir / "top.erofs", dir / "base.erofs"});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  ASSERT_EQ(bounded_cli({"verify", dir / "out"}).exit_code, 0);
  fs::permissions(dir / "out/layout.json", fs::perms::group_write | fs::perms::others_write, fs::perm_options::add);
  auto result = bounded_cli({"verify", "--digest", "sha256", dir / "out"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr(dir / "out/layout.json"), HasSubstr("writable by group or others"),
                                HasSubstr("--trust-descriptor")));
  EXPECT_THAT(result.out, Not(HasSubstr("sha256")));
}

// Issue 17 item 6: a missing layer is the first and only error (no dm-verity warning first).
TEST_F(HostileFilesTest, ComposeOfAMissingLayerReportsOnlyThatItIsMissing) {
  std::string missing = dir / "missing.erofs";
  auto result = bounded_cli({"compose", "-o", dir / "out", dir / "top.erofs", missing});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr(missing), HasSubstr("No such file or directory")));
  EXPECT_THAT(result.err, Not(HasSubstr("dm-verity")));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

// ---- item 3: dm-verity superblock sizes and algorithms ----

class HostileVerityTest : public HostileInputTest {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    test::make_layer(dir.path(), "layer", "00000000-0000-4000-8000-0000000000c1");
    layer = dir / "layer.erofs";
    auto format = test::cli({"verity", "format", "--json", layer});
    ASSERT_EQ(format.exit_code, 0) << format.err;
    hash_offset = nlohmann::json::parse(test::read_file(layer + ".dmverity"))["hashoffset"].get<uint64_t>();
  }
  // Rewrites superblock fields in place (the verity superblock has no checksum).
  void patch(size_t field_offset, const std::string& bytes) {
    test::write_bytes(layer, hash_offset + field_offset, bytes);
  }
  void patch_le64(size_t field_offset, uint64_t value) {
    std::string bytes(8, '\0');
    test::put_le(bytes, 0, value, 8);
    patch(field_offset, bytes);
  }
  // A sidecar whose root hash is `digest_tool` of the tree's top block: what a crafted layer
  // ships so that the cheap root-hash check passes.
  void forge_sidecar_root(const std::string& digest_tool) {
    // Hash type 1: the (32 zero bytes) salt first, then the block.
    auto digest = test::sh(fmt::format("(head -c 32 /dev/zero; dd if='{}' bs=4096 skip={} count=1 "
                                       "status=none) | {} | cut -d' ' -f1",
                                       layer, hash_offset / 4096 + 1, digest_tool));
    ASSERT_EQ(digest.exit_code, 0);
    std::string hex = digest.out.substr(0, digest.out.find('\n'));
    test::write_file(layer + ".dmverity",
                     nlohmann::json{{"roothash", hex}, {"hashoffset", hash_offset}}.dump());
  }
  std::string layer;
  uint64_t hash_offset = 0;
};

// An md5 superblock with a matching root hash was shown as "protected" by inspect and used
// by compose; only sha256 and sha512 may pass.
TEST_F(HostileVerityTest, Md5SuperblockIsRefusedByInspectAndComposeNamingTheLayer) {
  std::string algorithm(32, '\0');
  algorithm.replace(0, 3, "md5");
  patch(32, algorithm);
  forge_sidecar_root("md5sum");
  auto inspect = bounded_cli({"inspect", "--json", layer});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  auto verity = nlohmann::json::parse(inspect.out)["verity"];
  EXPECT_EQ(verity["state"], "broken");
  EXPECT_THAT(verity.value("error", ""), AllOf(HasSubstr(layer), HasSubstr("'md5' is not allowed")));
  auto compose = bounded_cli({"compose", "--verity", "auto", "-o", dir / "out", layer});
  EXPECT_EQ(compose.exit_code, 1);
  EXPECT_THAT(compose.err, AllOf(HasSubstr("layer " + layer), HasSubstr("'md5' is not allowed")));
}

// data_blocks = 1116892707587883008: data_blocks * 4096 wraps to 0, so the data area seemed to
// lie before the tree; `verify --verity` then sized a tree from it and died (SIGBUS in
// libcrypto, or bad_alloc under a limit). Every command must refuse it naming the layer.
TEST_F(HostileVerityTest, OverflowingDataBlocksIsRefusedEverywhereNamingTheLayer) {
  auto composed = bounded_cli({"compose", "--mode", "gpt", "--verity", "on", "-o", dir / "out", layer});
  ASSERT_EQ(composed.exit_code, 0) << composed.err;
  patch_le64(72, 1116892707587883008ull);
  auto verify = bounded_cli({"verify", "--verity", dir / "out"}, {}, 60);
  EXPECT_EQ(verify.exit_code, 1) << verify.err;
  EXPECT_THAT(verify.err, AllOf(HasSubstr("layer 0 (" + layer + ")"), HasSubstr("data area"),
                                HasSubstr("1116892707587883008 blocks")));
  auto show = bounded_cli({"verity", "show", layer});
  EXPECT_EQ(show.exit_code, 1);
  EXPECT_THAT(show.err, AllOf(HasSubstr(layer), HasSubstr("1116892707587883008 blocks")));
  auto compose = bounded_cli({"compose", "--verity", "auto", "-o", dir / "out2", layer});
  EXPECT_EQ(compose.exit_code, 1);
  EXPECT_THAT(compose.err, AllOf(HasSubstr("layer " + layer), HasSubstr("1116892707587883008 blocks")));
}

// A tree over fewer blocks than the filesystem would leave the rest unchecked in the guest.
TEST_F(HostileVerityTest, DataAreaSmallerThanTheFilesystemIsRefused) {
  patch_le64(72, 1);
  auto compose = bounded_cli({"compose", "--verity", "auto", "-o", dir / "out", layer});
  EXPECT_EQ(compose.exit_code, 1);
  EXPECT_THAT(compose.err, AllOf(HasSubstr("layer " + layer), HasSubstr("dm-verity covers 4096 bytes"),
                                 HasSubstr("EROFS filesystem is")));
}

}  // namespace
}  // namespace evmdk

// ---- issue 14: the new shapes (tar-index devices, read-only uppers, containerd 2.1 lists) ----

namespace evmdk {
namespace {

// A copy of tar-index layer 1 whose device slot says `blocks` blocks at `mapped_blkaddr`,
// with the superblock checksum (it covers the 512-byte block holding the slot) recomputed.
std::string tarindex_with_slot(const std::string& path, uint32_t blocks, uint32_t mapped_blkaddr) {
  std::string image = test::read_file(test::tarindex_layer(1));
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) image[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  const size_t slot = 9 * 128;  // devt_slotoff 9
  put32(slot + 64, blocks);
  put32(slot + 68, mapped_blkaddr);
  std::string covered = image.substr(1024, 512);
  covered[4] = covered[5] = covered[6] = covered[7] = 0;
  put32(1024 + 4, crc32c_update(~0u, covered.data(), covered.size()));
  test::write_file(path, image);
  return path;
}

// A tar-index layer whose device runs past its file, or maps the largest 32-bit address, is
// still a layer that needs its device: refused in the hook naming the mount, the device and
// the range, with nothing written.
TEST_F(HostileInputTest, TarIndexDeviceBeyondItsFileIsRefusedNamingMountAndRange) {
  fs::create_directories(dir / "s/1");
  struct Case {
    uint32_t blocks, mapped;
    std::string range;
  } cases[] = {{4000, 8, "bytes 4096..2052096"},
               {0xFFFFFFFFu, 0xFFFFFFFFu, "bytes 2199023255040..4398046510080"}};
  for (const auto& c : cases) {
    std::string layer = tarindex_with_slot(dir / "s/1/layer.erofs", c.blocks, c.mapped);
    auto result = hook(R"([{"type":"erofs","source":")" + layer + R"(","options":["ro","loop"]}])");
    EXPECT_EQ(result.exit_code, 1) << result.out;
    EXPECT_THAT(result.err, AllOf(HasSubstr("mount 0 (type 'erofs')"),
                                  HasSubstr("device 1 is mapped at " + c.range),
                                  HasSubstr("beyond the file's 1079296 bytes")));
    EXPECT_FALSE(fs::exists(state())) << "nothing may be written";
  }
}

// A read-only upper can never become writable: not as an overlay's upperdir, not through a
// writable bind.
TEST_F(HostileInputTest, ReadOnlyUpperIsNeverWritable) {
  auto overlay = hook(R"([{"type":"mkfs/ext4","source":"/s/rw.img","options":["X-containerd.mkfs.size=67108864","ro"]},
    {"type":"erofs","source":"/s/1/layer.erofs"},
    {"type":"format/mkdir/overlay","source":"overlay","options":["workdir={{ mount 0 }}/work",
     "upperdir={{ mount 0 }}/upper","lowerdir={{ mount 1 }}"]}])");
  EXPECT_EQ(overlay.exit_code, 1);
  EXPECT_THAT(overlay.err, HasSubstr("mount 0 (type 'mkfs/ext4'): option 'ro'"));
  auto bind = hook(R"([{"type":"mkfs/ext4","source":"/s/rw.img","options":["X-containerd.mkfs.size=67108864","ro"]},
    {"type":"format/bind","source":"{{ mount 0 }}/upper","options":["rbind","rw"]}])");
  EXPECT_EQ(bind.exit_code, 1);
  EXPECT_THAT(bind.err, HasSubstr("option 'rw' on a bind of the read-only upper"));
  EXPECT_FALSE(fs::exists(state()));
}

// containerd 2.1's overlay of host directories: a host path the mount table does not prove to
// be that snapshot's own EROFS mount is refused naming it and saying which containerd gives
// the VM the layer files; hostile values never reach the file system. (The accepted shape, over
// real loop mounts, is hook_real_lists_golden_root_test.cpp.)
TEST_F(HostileInputTest, Containerd21HostLowerdirsAreMappedOnlyWhenProven) {
  fs::create_directories(dir / "s/1/fs");
  test::write_file(dir / "s/1/layer.erofs", test::read_file(test::tarindex_layer(1)));
  fs::create_directory_symlink(dir / "s/1/fs", dir / "s/2");
  auto overlay = [&](const std::string& lowerdir) {
    return hook(R"([{"type":"overlay","source":"overlay","options":["workdir=/s/5/work",
      "upperdir=/s/5/fs","lowerdir=)" + lowerdir + R"("]}])");
  };
  struct Case {
    std::string lowerdir;
    std::vector<std::string> needles;
  } cases[] = {
      {dir / "s/1/fs", {dir / "s/1/fs", "not a mount point", "containerd 2.2"}},
      {dir / "s/2", {dir / "s/2", "without symlinks"}},
      {dir / "s/9/fs", {dir / "s/9/fs"}},
      {"/proc/self/root", {"/proc/self/root"}},
      {"s/1/fs", {"option 'lowerdir=s/1/fs'"}},
      {dir / "s/1/fs::/x", {"mount 0 (type 'overlay')"}},
      {std::string(dir / "s/1/fs") + "\\\\:x", {"mount 0 (type 'overlay')"}},
      {"{{ overlay 0 4000000000 }}", {"no mount of the list comes before it"}},
  };
  for (const auto& c : cases) {
    auto result = overlay(c.lowerdir);
    EXPECT_EQ(result.exit_code, 1) << c.lowerdir << "\n" << result.out;
    EXPECT_NE(result.exit_code, 137) << c.lowerdir << ": hung";
    for (const auto& needle : c.needles) EXPECT_THAT(result.err, HasSubstr(needle)) << c.lowerdir;
    EXPECT_FALSE(fs::exists(state())) << c.lowerdir << ": nothing may be written";
  }
  // A long list is refused at its first unproven entry, in bounded time and memory.
  std::string many;
  for (int i = 0; i < 20000; ++i) many += (i ? ":" : "") + std::string(dir / "s/1/fs");
  auto result = overlay(many);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr("not a mount point"), Not(HasSubstr("bad_alloc"))));
}

}  // namespace
}  // namespace evmdk
