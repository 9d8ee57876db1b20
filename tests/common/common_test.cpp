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

// A flat disk's device slots carry Kata's dm-verity keys under X-erofs-vmdk.device.<slot>.;
// the guest must get back exactly the options the host started from, per slot.
TEST(StorageSpec, DeviceVerityOptionsRoundTripPerSlot) {
  std::vector<std::string> kata{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=ab",
                                "X-kata.dmverity.hashoffset=8192", "ro"};
  auto slot2 = to_device_verity_options(kata, 2);
  EXPECT_EQ(slot2, (std::vector<std::string>{"X-erofs-vmdk.device.2.dmverity-enabled=true",
                                             "X-erofs-vmdk.device.2.dmverity.roothash=ab",
                                             "X-erofs-vmdk.device.2.dmverity.hashoffset=8192"}));
  std::vector<std::string> storage{"ro", "X-kata.dmverity.roothash=cd"};
  storage.insert(storage.end(), slot2.begin(), slot2.end());
  auto slot12 = to_device_verity_options({"X-kata.dmverity.roothash=ef"}, 12);
  storage.insert(storage.end(), slot12.begin(), slot12.end());
  EXPECT_EQ(device_option_slots(storage), (std::vector<unsigned>{2, 12}));
  EXPECT_EQ(device_verity_options(storage, 2),
            (std::vector<std::string>{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=ab",
                                      "X-kata.dmverity.hashoffset=8192"}));
  // Slot 1 is not a prefix of slot 12.
  EXPECT_TRUE(device_verity_options(storage, 1).empty());
  EXPECT_EQ(device_verity_options(storage, 12),
            std::vector<std::string>{"X-kata.dmverity.roothash=ef"});
  EXPECT_TRUE(is_dmverity_option("X-kata.dmverity-enabled=true"));
  EXPECT_FALSE(is_dmverity_option("X-kata.dmverityx=1"));
  for (std::string bad : {"X-erofs-vmdk.device.0.dmverity.roothash=ab",
                          "X-erofs-vmdk.device.x.dmverity.roothash=ab", "X-erofs-vmdk.device.3"}) {
    EXPECT_THROW(device_option_slots({bad}), Error) << bad;
  }
}

}  // namespace
}  // namespace evmdk
