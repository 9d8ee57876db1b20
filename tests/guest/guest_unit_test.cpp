// Unit tests of the guest driver's pure parts (no root): mkdir directive parsing and
// resolution beneath a root, the EROFS superblock/device-table reader, the journal round trip,
// the mountinfo reader and storage classification errors.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/guest/driver.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/mkdir_directive.h"
#include "evmdk/guest/mountinfo.h"
#include "test_support.h"

namespace evmdk::guest {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

TEST(MkdirDirective, ParsesEveryMountIndexModeAndOwner) {
  auto d = parse_mkdir_directive("{{ mount 3 }}/var//lib/./app:0750:1000:2000");
  EXPECT_EQ(d.mount_index, 3u);
  EXPECT_EQ(d.path, "var/lib/app");
  EXPECT_EQ(d.mode, 0750u);
  EXPECT_EQ(*d.uid, 1000u);
  EXPECT_EQ(*d.gid, 2000u);
  auto plain = parse_mkdir_directive("{{ mount 0 }}/upper:0755");
  EXPECT_EQ(plain.mount_index, 0u);
  EXPECT_FALSE(plain.uid.has_value());
}

TEST(MkdirDirective, RejectsMalformedSpecsQuotingThem) {
  for (std::string bad :
       {"/upper:0755", "{{ mount x }}/a:0755", "{{ mount 0 }}/a", "{{ mount 0 }}/a:999",
        "{{ mount 0 }}/a:0755:1", "{{ mount 0 }}/../a:0755", "{{ mount 0 }}/:0755",
        "{{ mount 0 }}a:0755", "{{ mount 0 }}/a:0755:u:g"}) {
    try {
      parse_mkdir_directive(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(bad), std::string::npos) << error.what();
    }
  }
}

TEST(MkdirDirective, CreatesWithExactModeAndRefusesSymlinkEscapes) {
  TempDir temp;
  std::string root = temp / "root";
  fs::create_directories(root + "/inside");
  fs::create_directories(temp / "outside");
  fs::create_symlink(temp / "outside", root + "/abs");
  fs::create_symlink("../outside", root + "/rel");
  fs::create_symlink("inside", root + "/ok");  // stays beneath the root: allowed
  mode_t old_mask = ::umask(077);
  apply_mkdir_directive(root, parse_mkdir_directive("{{ mount 0 }}/a/b:0751"), "spec");
  ::umask(old_mask);
  struct stat st {};
  ASSERT_EQ(::stat((root + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  apply_mkdir_directive(root, parse_mkdir_directive("{{ mount 0 }}/ok/c:0755"), "spec");
  EXPECT_TRUE(fs::is_directory(root + "/inside/c"));
  for (std::string spec :
       {"{{ mount 0 }}/abs/x:0755", "{{ mount 0 }}/rel/x:0755", "{{ mount 0 }}/abs:0755"}) {
    try {
      apply_mkdir_directive(root, parse_mkdir_directive(spec), spec);
      ADD_FAILURE() << "followed a symlink out of the root: " << spec;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("symlink escape refused"), std::string::npos)
          << error.what();
    }
  }
  EXPECT_TRUE(fs::is_empty(temp / "outside"));
}

void put32(std::string& bytes, size_t at, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>(value >> (8 * i));
}

// A 4 KiB-block image of 2 blocks with one extra device (6 blocks at block 2) in its device
// table at byte 1280; `incompat` is the feature_incompat word (DEVICE_TABLE at least).
std::string image_with_one_device(uint32_t incompat) {
  std::string image(8192, '\0');
  put32(image, 1024, 0xE0F5E1E2u);
  image[1024 + 12] = 12;
  put32(image, 1024 + 36, 2);
  put32(image, 1024 + 80, incompat);
  image[1024 + 86] = 1;   // one extra device
  image[1024 + 88] = 10;  // slot table at byte 1280
  put32(image, 1280 + 64, 6);
  put32(image, 1280 + 68, 2);
  return image;
}

TEST(ErofsSuperblock, ReadsUuidBlocksAndDeviceTable) {
  TempDir temp;
  std::string image = image_with_one_device(0x8);  // DEVICE_TABLE
  for (int i = 0; i < 16; ++i) image[1024 + 48 + i] = static_cast<char>(0x10 + i);
  std::memcpy(&image[1280], "blobtag", 7);
  std::string path = temp / "image";
  test::write_file(path, image);
  auto sb = read_erofs_superblock(path);
  EXPECT_EQ(sb.uuid, "10111213-1415-1617-1819-1a1b1c1d1e1f");
  EXPECT_EQ(sb.blocks, 2u);
  EXPECT_EQ(sb.block_size(), 4096u);
  ASSERT_EQ(sb.devices.size(), 1u);
  EXPECT_EQ(sb.devices[0].tag, "blobtag");
  EXPECT_EQ(sb.devices[0].blocks, 6u);
  EXPECT_EQ(sb.devices[0].mapped_blkaddr, 2u);
  EXPECT_TRUE(same_uuid(sb.uuid, "10111213-1415-1617-1819-1A1B1C1D1E1F"));
  EXPECT_FALSE(same_uuid(sb.uuid, "10111213-1415-1617-1819-1a1b1c1d1e10"));

  put32(image, 1024, 0x12345678u);
  test::write_file(path, image);
  try {
    read_erofs_superblock(path);
    ADD_FAILURE();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("not an EROFS image"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos);
  }
}

// 48BIT images keep the high bits of the block count (superblock byte 14) and of each device
// slot's blocks and mapped_blkaddr (slot bytes 72 and 74): the guest sizes its slices from them.
TEST(ErofsSuperblock, ReadsTheHighBitsOf48BitImages) {
  TempDir temp;
  std::string image = image_with_one_device(0x8 | 0x80);  // DEVICE_TABLE | 48BIT
  image[1024 + 14] = 1;                                   // blocks bits 32..39
  image[1280 + 72] = 3;                                   // blocks bits 32..39
  image[1280 + 74] = 4;                                   // mapped_blkaddr bits 32..39
  std::string path = temp / "image";
  test::write_file(path, image);
  auto sb = read_erofs_superblock(path);
  EXPECT_EQ(sb.blocks, (uint64_t{1} << 32) | 2u);
  ASSERT_EQ(sb.devices.size(), 1u);
  EXPECT_EQ(sb.devices[0].blocks, (uint64_t{3} << 32) | 6u);
  EXPECT_EQ(sb.devices[0].mapped_blkaddr, (uint64_t{4} << 32) | 2u);
}

TEST(Journal, RoundTripsAndReportsCorruption) {
  TempDir temp;
  Journal journal;
  journal.container_id = "abc";
  journal.base_dir = temp.path();
  journal.rootfs = "/r";
  journal.phase = "mounted";
  journal.created_dirs = {"/x", "/x/y"};
  journal.mounts = {{"/x/y/lower-0", 41, "erofs"}, {"/r", 42, "overlay"}};
  journal.loops = {{"/dev/loop7", "/dev/vda", 1048576, 6, 1234, 17}};
  journal.verity_devices = {"evmdk-abc-lower-0"};
  save_journal(journal);
  auto loaded = load_journal(temp.path(), "abc");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(to_json(*loaded), to_json(journal));
  EXPECT_FALSE(load_journal(temp.path(), "other").has_value());
  test::write_file(journal_path(temp.path(), "abc"), "{ not json");
  EXPECT_THROW(load_journal(temp.path(), "abc"), Error);
  remove_journal(temp.path(), "abc");
  EXPECT_FALSE(load_journal(temp.path(), "abc").has_value());
}

// Review finding: a journal of an older version must not read as "nothing recorded".
TEST(Journal, AnOlderVersionsJournalIsNotMistakenForNone) {
  test::TempDir temp;
  test::write_file(temp / "abc.journal.json", "{}");
  try {
    load_journal(temp.path(), "abc");
    ADD_FAILURE() << "an old journal was ignored";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(temp / "abc.journal.json"), std::string::npos)
        << error.what();
  }
  // A container directory of that name (id "abc.journal.json") is no journal.
  fs::create_directories(temp / "x.journal.json");
  EXPECT_FALSE(load_journal(temp.path(), "x").has_value());
}

TEST(Journal, ValidationKeepsOwnEntriesAndRefusesTheRest) {
  Journal journal;
  journal.container_id = "c1";
  journal.base_dir = "/run/erofs-vmdk";
  journal.rootfs = "/run/c1/rootfs";
  journal.created_dirs = {"/run/erofs-vmdk/c1", "/run/c1",      "/run/c1/rootfs",    "/run",
                          "/run/erofs-vmdk",    "/home/victim", "/run/erofs-vmdk/c2"};
  journal.mounts = {{"/run/erofs-vmdk/c1/multi-layer/lower-0", 40, "erofs"},
                    {"/run/c1/rootfs", 41, "overlay"},
                    {"/etc", 1, "ext4"},
                    {"/run/erofs-vmdk/c2/multi-layer/upper", 9, "ext4"},
                    {"/run/erofs-vmdk/c1/../c2", 9, "ext4"}};
  journal.loops = {{"/dev/loop3", "/dev/vdb", 0, 5, 6, 7},
                   {"/dev/sda", "", 0, 5, 6, 0},
                   {"/dev/loop4", "", 0, 0, 0, 0}};
  journal.verity_devices = {"evmdk-c1-lower-0", "evmdk-c1-lower-2-device-3", "evmdk-c2-lower-0",
                            "evmdk-c1-lower-x"};
  auto problems = validate_journal(journal, "/run/erofs-vmdk", "c1", "");
  EXPECT_EQ(journal.rootfs, "/run/c1/rootfs");
  EXPECT_EQ(journal.created_dirs,
            (std::vector<std::string>{"/run/erofs-vmdk/c1", "/run/c1", "/run/c1/rootfs"}));
  ASSERT_EQ(journal.mounts.size(), 2u);
  ASSERT_EQ(journal.loops.size(), 1u);
  EXPECT_EQ(journal.verity_devices,
            (std::vector<std::string>{"evmdk-c1-lower-0", "evmdk-c1-lower-2-device-3"}));
  EXPECT_EQ(problems.size(), 4u + 3u + 2u + 2u);
  std::string all;
  for (const auto& problem : problems) all += problem + "\n";
  for (const char* named :
       {"/home/victim", "/etc", "/dev/sda", "evmdk-c2-lower-0", "/run/erofs-vmdk/c1/../c2"}) {
    EXPECT_NE(all.find(named), std::string::npos) << named << " in " << all;
  }
  // Another container's journal, or a rootfs that differs from the one given, is not acted on.
  Journal other = journal;
  other.container_id = "c2";
  EXPECT_FALSE(validate_journal(other, "/run/erofs-vmdk", "c1", "").empty());
  EXPECT_TRUE(other.mounts.empty() && other.created_dirs.empty() && other.loops.empty());
  Journal moved = journal;
  validate_journal(moved, "/run/erofs-vmdk", "c1", "/run/c2/rootfs");
  EXPECT_TRUE(moved.rootfs.empty());
  EXPECT_EQ(moved.mounts.size(), 1u);  // the lower in the container's own directory
  // The rootfs may not be the base, above it, or inside another container's directory.
  for (const char* bad :
       {"/", "/run", "/run/erofs-vmdk", "/run/erofs-vmdk/c2/rootfs", "relative", "/a/../b"}) {
    EXPECT_FALSE(rootfs_refusal(bad, "/run/erofs-vmdk", "c1").empty()) << bad;
  }
  EXPECT_TRUE(rootfs_refusal("/run/erofs-vmdk/c1/rootfs", "/run/erofs-vmdk", "c1").empty());
}

TEST(Mountinfo, FindsRootAndUnescapes) {
  auto mounts = mounts_under("/");
  ASSERT_FALSE(mounts.empty());
  EXPECT_TRUE(is_mount_point("/"));
  EXPECT_TRUE(mounts_under("/definitely/not/mounted/here").empty());
}

// mount_rootfs refuses `request` with an error containing `text`.
void expect_refused(const MountRequest& request, const std::string& text) {
  try {
    mount_rootfs(request);
    ADD_FAILURE() << "expected a refusal containing: " << text;
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
  }
}

TEST(Driver, RefusesBadRequestsBeforeTouchingAnything) {
  TempDir temp;
  MountRequest request;
  request.base_dir = temp / "base";
  request.rootfs = temp / "rootfs";
  request.container_id = "../evil";
  Storage lower{"blk", {}, "/dev/null", "erofs", {"ro", "X-kata.overlay-lower"}, ""};
  request.storages = {lower};
  EXPECT_THROW(mount_rootfs(request), Error);
  request.container_id = "c";
  request.storages = {};
  expect_refused(request, "no lower");
  Storage gap = lower;
  gap.options.push_back("X-erofs-vmdk.layer-index=1");
  request.storages = {gap};
  expect_refused(request, "index 1");
  Storage mkdir_far = lower;
  mkdir_far.options.push_back("X-kata.mkdir.path={{ mount 5 }}/x:0755");
  request.storages = {mkdir_far};
  expect_refused(request, "no mount 5");
  // A device-mapper name for a protected flat device would pass 127 bytes with this id.
  Storage protected_lower = lower;
  protected_lower.options.push_back("X-erofs-vmdk.device.1.dmverity.roothash=" +
                                    std::string(64, 'a'));
  protected_lower.options.push_back("X-erofs-vmdk.device.1.dmverity.hashoffset=4096");
  request.storages = {protected_lower};
  request.container_id = std::string(110, 'c');  // evmdk-<110>-lower-0-device-1: 131 bytes
  expect_refused(request, "too long for its dm-verity device names");
  EXPECT_FALSE(fs::exists(temp / "base"));
  EXPECT_FALSE(fs::exists(temp / "rootfs"));
}

TEST(Driver, TeardownWithoutJournalIsANoOp) {
  TempDir temp;
  TeardownRequest request;
  request.container_id = "nothing";
  request.base_dir = temp / "base";
  request.rootfs = temp / "rootfs";
  auto report = teardown_rootfs(request);
  EXPECT_TRUE(report.clean()) << report.to_json().dump();
}

}  // namespace
}  // namespace evmdk::guest
