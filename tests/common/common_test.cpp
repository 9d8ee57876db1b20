#include <sys/stat.h>

#include <filesystem>

#include "evmdk/atomic_file.h"
#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/storage_spec.h"
#include "test_support.h"

namespace evmdk {
namespace {

namespace fs = std::filesystem;

TEST(Checksum, Crc32cMatchesTheCastagnoliCheckValue) {
  const std::string data = "123456789";
  EXPECT_EQ(crc32c_update(~0u, data.data(), data.size()) ^ ~0u, 0xE3069283u);
}

TEST(Checksum, Crc32MatchesTheIeeeCheckValue) {
  const std::string data = "123456789";
  EXPECT_EQ(crc32_ieee(data.data(), data.size()), 0xCBF43926u);
}

TEST(AtomicFile, ReplacesContentsAndLeavesNoTempFile) {
  test::TempDir dir;
  std::string path = dir / "out.txt";
  write_file_atomic(path, "first");
  write_file_atomic(path, "second", 0600);
  EXPECT_EQ(test::read_file(path), "second");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(OutputTransaction, UncommittedLeavesNothingBehind) {
  test::TempDir dir;
  std::string out = dir / "new-output";
  {
    OutputTransaction transaction(out);
    transaction.add("a.json", "{}");
    transaction.add_sparse("zero.img", 1 << 20);
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST(OutputTransaction, UncommittedKeepsAPreexistingDirectoryAndItsFiles) {
  test::TempDir dir;
  test::write_file(dir / "keep", "user data");
  {
    OutputTransaction transaction(dir.path());
    transaction.add("keep", "replacement");
  }
  EXPECT_EQ(test::read_file(dir / "keep"), "user data");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(OutputTransaction, CommitPublishesEveryFile) {
  test::TempDir dir;
  std::string out = dir / "o";
  OutputTransaction transaction(out);
  transaction.add("a", "A");
  transaction.add_sparse("z", 4096);
  EXPECT_THROW(transaction.add("a", "again"), Error);
  EXPECT_THROW(transaction.add("../escape", "x"), Error);
  transaction.commit();
  EXPECT_EQ(test::read_file(out + "/a"), "A");
  EXPECT_EQ(fs::file_size(out + "/z"), 4096u);
}

TEST(StorageSpec, RoundTripsKataJsonAndReadsMarkers) {
  auto json = nlohmann::json::parse(R"([{"driver":"blk","driver_options":[],"source":"/dev/vda",
    "fstype":"erofs","options":["ro","X-kata.partition-number=3","X-kata.overlay-lower"],
    "mount_point":"/run/x","fs_group":null}])");
  auto storages = storages_from_json(json);
  ASSERT_EQ(storages.size(), 1u);
  EXPECT_EQ(option_value(storages[0].options, marker::kPartitionNumber), "3");
  EXPECT_TRUE(has_option(storages[0].options, marker::kOverlayLower));
  EXPECT_FALSE(has_option(storages[0].options, marker::kOverlayUpper));
  EXPECT_EQ(storages_from_json(to_json(storages)), storages);
  EXPECT_THROW(storages_from_json(nlohmann::json::parse(R"([{"options":"ro"}])")), Error);
}

}  // namespace
}  // namespace evmdk
