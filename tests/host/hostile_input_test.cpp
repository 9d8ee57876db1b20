// Issue 13: hostile mount lists, layers, verity data and descriptors get an error naming the
// input at fault — never a crash, a hang, a runaway allocation or a read of an unrelated file.
// Every CLI run here is bounded: SIGKILL after a timeout and a 1 GiB address-space limit, so a
// regression shows up as a failed assertion (exit 137 / bad_alloc), not a stuck test run.
#include <gmock/gmock.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "layer_fixtures.h"

namespace evmdk {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

// The CLI under `timeout -s KILL` and `prlimit --as`.
test::CommandResult bounded_cli(const std::vector<std::string>& args, const std::string& input = {},
                                int seconds = 20) {
  std::vector<std::string> argv{"timeout", "-s", "KILL", std::to_string(seconds), "prlimit",
                                "--as=1073741824", test::cli_path()};
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

}  // namespace
}  // namespace evmdk
