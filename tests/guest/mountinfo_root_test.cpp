// The mountinfo reader on real mounts: names the kernel escapes (space, tab, newline,
// backslash) come back as the directory's real name, and nesting is seen below a directory.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <algorithm>
#include <filesystem>

#include "evmdk/guest/mountinfo.h"
#include "test_support.h"

namespace evmdk::guest {
namespace {

namespace fs = std::filesystem;

// A tmpfs mounted for the test's duration.
class TmpfsMount {
 public:
  explicit TmpfsMount(const std::string& target) : target_(target) {
    fs::create_directories(target);
    if (::mount("evmdk-test", target.c_str(), "tmpfs", 0, "size=1m") != 0) {
      throw std::runtime_error("mount tmpfs at " + target + " failed");
    }
  }
  ~TmpfsMount() { ::umount2(target_.c_str(), MNT_DETACH); }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

 private:
  std::string target_;
};

TEST(MountinfoRoot, EscapedNamesComeBackAsTheRealDirectoryNames) {
  EVMDK_REQUIRE_ROOT();
  test::TempDir temp;
  std::string odd = temp / "a dir\twith\\odd\nname";
  std::string inner = odd + "/inner";
  TmpfsMount outer_mount(odd);
  TmpfsMount inner_mount(inner);

  EXPECT_TRUE(is_mount_point(odd));
  EXPECT_TRUE(is_mount_point(inner));
  EXPECT_FALSE(is_mount_point(temp.path()));
  auto below = mounts_under(temp.path());
  ASSERT_EQ(below.size(), 2u);
  EXPECT_EQ(below[0].mount_point, odd);  // parents first
  EXPECT_EQ(below[1].mount_point, inner);
  EXPECT_EQ(below[1].parent_id, below[0].id);
  EXPECT_EQ(below[0].fstype, "tmpfs");
  EXPECT_EQ(below[0].source, "evmdk-test");
}

}  // namespace
}  // namespace evmdk::guest
