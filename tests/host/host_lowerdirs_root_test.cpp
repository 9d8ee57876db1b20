// containerd 2.1 host lowerdirs -> layer files: mapped only when the kernel's mount table
// shows the directory is the EROFS loop mount of that very <snapshot>/layer.erofs.
#include "evmdk/host/hook/host_lowerdirs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <filesystem>

#include "evmdk/error.h"
#include "loop_fixtures.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string refusal(const std::vector<std::string>& dirs) {
  try {
    resolve_host_lowerdirs(dirs);
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "resolve_host_lowerdirs accepted " << ::testing::PrintToString(dirs);
  return {};
}

// A snapshot directory as containerd 2.1 leaves it: N/layer.erofs loop-mounted on N/fs.
class Snapshot {
 public:
  Snapshot(const std::string& root, const std::string& id, const std::string& content)
      : dir_(root + "/" + id) {
    test::make_tree(dir_ + "/src", {{"hello", content}});
    test::make_erofs(dir_ + "/src", layer());
    loop_ = std::make_unique<test::LoopDevice>(layer(), false);
    mount_ = std::make_unique<test::ReadOnlyMount>(loop_->device(), fs_dir(), "erofs");
  }
  std::string layer() const { return dir_ + "/layer.erofs"; }
  std::string fs_dir() const { return dir_ + "/fs"; }

 private:
  std::string dir_;
  std::unique_ptr<test::LoopDevice> loop_;
  std::unique_ptr<test::ReadOnlyMount> mount_;
};

TEST(HostLowerdirs, SplitsAbsoluteListsAndRefusesTheRest) {
  EXPECT_EQ(split_host_lowerdir("/a/4/fs:/a/3/fs/", "mount 0"),
            (std::vector<std::string>{"/a/4/fs", "/a/3/fs"}));
  for (const char* bad : {"", "/a::/b", "rel/fs", "/a\\:b", "/a:"}) {
    EXPECT_THROW(split_host_lowerdir(bad, "mount 0"), Error) << bad;
  }
}

TEST(HostLowerdirs, MapsEachLoopMountedLayerToItsFile) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "losetup");
  test::TempDir tmp;
  Snapshot base(tmp.path(), "1", "base");
  Snapshot top(tmp.path(), "2", "top");

  auto layers = resolve_host_lowerdirs({top.fs_dir(), base.fs_dir()});
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].layer_path, fs::canonical(top.layer()).string());
  EXPECT_EQ(layers[1].layer_path, fs::canonical(base.layer()).string());
  EXPECT_EQ(layers[0].directory, top.fs_dir());
  struct stat st {};
  ASSERT_EQ(::stat(base.layer().c_str(), &st), 0);
  EXPECT_EQ(layers[1].inode, st.st_ino);
}

TEST(HostLowerdirs, RefusesWhatTheMountTableDoesNotProve) {
  EVMDK_REQUIRE_ROOT();
  EVMDK_REQUIRE_TOOLS("mkfs.erofs", "losetup");
  test::TempDir tmp;
  Snapshot real(tmp.path(), "1", "real");

  // A plain directory next to a layer file.
  fs::create_directories(tmp / "2/fs");
  fs::copy_file(real.layer(), tmp / "2/layer.erofs");
  EXPECT_THAT(refusal({tmp / "2/fs"}), HasSubstr("not a mount point"));
  EXPECT_THAT(refusal({tmp / "2/fs"}), HasSubstr("containerd 2.2"));

  // Not EROFS.
  fs::create_directories(tmp / "3/fs");
  ASSERT_EQ(::mount("tmpfs", (tmp / "3/fs").c_str(), "tmpfs", 0, nullptr), 0);
  EXPECT_THAT(refusal({tmp / "3/fs"}), HasSubstr("'tmpfs' mount, not EROFS"));
  ::umount2((tmp / "3/fs").c_str(), 0);

  // The layer file next to the mount is another file than the loop device's backing file:
  // snapshot 4's fs is a bind of snapshot 1's mount, its layer.erofs a copy.
  fs::create_directories(tmp / "4/fs");
  fs::copy_file(real.layer(), tmp / "4/layer.erofs");
  ASSERT_EQ(::mount(real.fs_dir().c_str(), (tmp / "4/fs").c_str(), nullptr, MS_BIND, nullptr), 0);
  EXPECT_THAT(refusal({tmp / "4/fs"}), HasSubstr("not by"));
  ::umount2((tmp / "4/fs").c_str(), 0);

  // A layer file that is a symlink to the real one.
  fs::create_directories(tmp / "5/fs");
  fs::create_symlink(real.layer(), tmp / "5/layer.erofs");
  ASSERT_EQ(::mount(real.fs_dir().c_str(), (tmp / "5/fs").c_str(), nullptr, MS_BIND, nullptr), 0);
  EXPECT_THAT(refusal({tmp / "5/fs"}), HasSubstr("symlink"));
  ::umount2((tmp / "5/fs").c_str(), 0);

  // A symlinked lowerdir.
  fs::create_directories(tmp / "6");
  fs::create_directory_symlink(real.fs_dir(), tmp / "6/fs");
  EXPECT_THAT(refusal({tmp / "6/fs"}), HasSubstr("without symlinks"));

  // Missing.
  EXPECT_THAT(refusal({tmp / "7/fs"}), HasSubstr(tmp / "7/fs"));
  // One bad entry refuses the whole list.
  EXPECT_THAT(refusal({real.fs_dir(), tmp / "2/fs"}), HasSubstr(tmp / "2/fs"));
}

}  // namespace
}  // namespace evmdk::host
