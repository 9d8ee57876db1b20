// Storage options -> dm-verity parameters: what the guest accepts, and the errors a user sees.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "evmdk/error.h"
#include "evmdk/guest/verity.h"

namespace evmdk::guest {
namespace {

using ::testing::HasSubstr;

const std::string kRoot = "fedd2c7ef91501f0cc706dcdd890538617e9fbda9c4f6a498138f0d9e7e27c29";

std::string error_of(const std::vector<std::string>& options) {
  try {
    verity_params_from_options(options, "lower-2 (/dev/vda3)");
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

TEST(VerityOptions, NoVerityOptionsMeansUnprotected) {
  EXPECT_EQ(verity_params_from_options({"ro", "X-kata.overlay-lower"}, "l"), std::nullopt);
  EXPECT_EQ(verity_params_from_options({"X-kata.dmverity-enabled=false"}, "l"), std::nullopt);
}

TEST(VerityOptions, ParsesKataOptions) {
  auto params = verity_params_from_options(
      {"ro", "X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot.substr(0, 32) +
                                                 std::string("FEDD2C7EF91501F0CC706DCDD890538617E9FBDA9C4F6A498138F0D9E7E27C29")
                                                     .substr(32),
       "X-kata.dmverity.hashoffset=1228800", "X-kata.dmverity.blocksize=4096",
       "X-kata.dmverity.hashsize=4096", "X-kata.dmverity.algorithm=sha256",
       "X-kata.dmverity.salt=" + std::string(64, '0'), "X-kata.dmverity.hashtype=1"},
      "l");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->root_hash, kRoot);  // lowercased
  EXPECT_EQ(params->hash_offset, 1228800u);
  EXPECT_EQ(params->data_block_size, 4096u);
  EXPECT_EQ(params->hash_block_size, 4096u);
  EXPECT_EQ(params->algorithm, "sha256");
  EXPECT_EQ(params->salt, std::string(64, '0'));
  EXPECT_EQ(params->hash_type, 1u);
  EXPECT_FALSE(params->no_superblock);
}

TEST(VerityOptions, RoundTripsThroughVerityOptions) {
  VerityParams params;
  params.root_hash = kRoot;
  params.hash_offset = 8192;
  params.salt = "";
  params.no_superblock = true;
  params.algorithm = "sha256";
  auto parsed = verity_params_from_options(verity_options(params), "l");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, params);
}

TEST(VerityOptions, ClearErrorsNameTheLayerAndOption) {
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.hashoffset=4096"}),
              AllOf(HasSubstr("lower-2 (/dev/vda3)"), HasSubstr("X-kata.dmverity.roothash")));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot}),
              HasSubstr("X-kata.dmverity.hashoffset is missing"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=xyz1",
                        "X-kata.dmverity.hashoffset=4096"}),
              HasSubstr("X-kata.dmverity.roothash=xyz1 is not"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=12ab"}),
              HasSubstr("X-kata.dmverity.hashoffset=12ab is not a decimal number"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=1000"}),
              HasSubstr("not a multiple of 512"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=4096", "X-kata.dmverity.blocksize=3000"}),
              HasSubstr("X-kata.dmverity.blocksize=3000 must be a power of two"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=4096", "X-kata.dmverity.hashtype=2"}),
              HasSubstr("X-kata.dmverity.hashtype=2 must be 0 or 1"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=4096", "X-kata.dmverity.salt=abc"}),
              HasSubstr("X-kata.dmverity.salt=abc is not a hex string"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=4096", "X-kata.dmverity.roothsh=1"}),
              HasSubstr("unknown dm-verity option X-kata.dmverity.roothsh"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=maybe"}),
              HasSubstr("X-kata.dmverity-enabled=maybe must be true or false"));
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.roothash=" + kRoot, "X-kata.dmverity.hashoffset=4096"}),
              HasSubstr("given 2 times"));
}

// A layer the host protected must never be mounted unprotected by accident.
TEST(VerityOptions, RefusesDisabledMarkerWithVerityData) {
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=false", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=4096"}),
              HasSubstr("refusing to mount"));
  // The options without the enable marker still mean "protect".
  auto params = verity_params_from_options(
      {"X-kata.dmverity.roothash=" + kRoot, "X-kata.dmverity.hashoffset=4096"}, "l");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->hash_offset, 4096u);
}

TEST(VerityOptions, NoSuperblockNeedsADataArea) {
  EXPECT_THAT(error_of({"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + kRoot,
                        "X-kata.dmverity.hashoffset=0", "X-kata.dmverity.no-superblock=true"}),
              HasSubstr("X-kata.dmverity.no-superblock needs X-kata.dmverity.hashoffset > 0"));
}

TEST(VerityDevice, RefusesBadNamesBeforeTouchingTheKernel) {
  VerityParams params;
  params.root_hash = kRoot;
  EXPECT_THROW(VerityDevice::activate("a/b", "/dev/null", "/dev/null", params), Error);
  EXPECT_THROW(VerityDevice::activate("", "/dev/null", "/dev/null", params), Error);
  VerityDevice empty;
  EXPECT_FALSE(empty.active());
  empty.remove();  // owns nothing: no-op
}

}  // namespace
}  // namespace evmdk::guest
