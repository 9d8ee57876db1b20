// The gpt-disk-guid:<GUID> storage source (evmdk/contract/disk_source.h): what the host
// encodes the guest decodes back to the same GUID, and the decoder refuses every near miss a
// hostile or careless host could send (length, case, hex, dash positions, the prefix).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_support.h"
#include "evmdk/contract/disk_source.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"

namespace evmdk::contract {
namespace {

using ::testing::HasSubstr;

using test::error_of;

TEST(DiskSource, RoundTrip) {
  ondisk::Guid guid{};
  for (size_t i = 0; i < guid.size(); ++i) guid[i] = static_cast<uint8_t>(0x0f + 17 * i);
  std::string source = encode_gpt_disk_guid_source(guid);
  EXPECT_EQ(source, "gpt-disk-guid:0f203142-5364-7586-97a8-b9cadbecfd0e");
  EXPECT_TRUE(is_gpt_disk_guid_source(source));
  EXPECT_EQ(decode_gpt_disk_guid_source(source), guid);
  // From text: either case in, canonical lower case out.
  EXPECT_EQ(encode_gpt_disk_guid_source(std::string_view("0F203142-5364-7586-97A8-B9CADBECFD0E")),
            source);
  EXPECT_EQ(encode_gpt_disk_guid_source(ondisk::Guid{}),
            "gpt-disk-guid:00000000-0000-0000-0000-000000000000");
  EXPECT_THAT(error_of([] { encode_gpt_disk_guid_source(std::string_view("not-a-guid")); }),
              HasSubstr("not-a-guid"));
}

TEST(DiskSource, StrictDecoder) {
  const std::string good = "0f203142-5364-7586-97a8-b9cadbecfd0e";
  const std::vector<std::string> bad = {
      "gpt-disk-guid:",
      "gpt-disk-guid:" + good.substr(0, 35),                 // short
      "gpt-disk-guid:" + good + "0",                         // long
      "gpt-disk-guid:" + good + "\n",                        // trailing newline
      "gpt-disk-guid: " + good.substr(1),                    // space
      "gpt-disk-guid:0F203142-5364-7586-97a8-b9cadbecfd0e",  // upper case
      "gpt-disk-guid:0g203142-5364-7586-97a8-b9cadbecfd0e",  // not hex
      "gpt-disk-guid:0f2031425-364-7586-97a8-b9cadbecfd0e",  // dash moved
      "gpt-disk-guid:0f203142-5364-7586-97a8b9cadbecfd0e0",  // dash missing
      "gpt-disk-guid:0f203142+5364-7586-97a8-b9cadbecfd0e",  // other separator
      "gpt-disk-guid:{0f203142-5364-7586-97a8-b9cadbecfd}",  // braces
      "gpt-disk-guid:0f2031425364758697a8b9cadbecfd0e",      // no dashes
      std::string("gpt-disk-guid:0f203142-5364-7586-97a8-b9cadbecfd0") + '\0',
      "GPT-DISK-GUID:" + good,
      "gpt-disk-uuid:" + good,
      good,
  };
  for (const auto& source : bad) {
    EXPECT_THAT(error_of([&] { decode_gpt_disk_guid_source(source); }), HasSubstr("storage source"))
        << source;
  }
  EXPECT_THAT(error_of([] { decode_gpt_disk_guid_source("gpt-disk-guid:xyz"); }),
              HasSubstr("lower-case hex, 8-4-4-4-12"));
  EXPECT_FALSE(is_gpt_disk_guid_source("serial:gpt-disk-guid:"));
  EXPECT_NO_THROW(decode_gpt_disk_guid_source("gpt-disk-guid:" + good));
}

// The guest's plan-time check accepts the other source forms untouched.
TEST(DiskSource, GuestCheckOnlyJudgesItsOwnForm) {
  EXPECT_NO_THROW(guest::check_disk_source("serial:evmdk-0123"));
  EXPECT_NO_THROW(guest::check_disk_source("/dev/vdb"));
  EXPECT_NO_THROW(guest::check_disk_source("02/00"));
  EXPECT_NO_THROW(guest::check_disk_source("gpt-disk-guid:0f203142-5364-7586-97a8-b9cadbecfd0e"));
  EXPECT_THROW(guest::check_disk_source("gpt-disk-guid:0f203142"), Error);
}

}  // namespace
}  // namespace evmdk::contract
