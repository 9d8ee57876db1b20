// The harness's lane selection without booting anything: the environment variables that pick a
// QEMU and a kernel per run (scripts/test-lanes.sh) are honoured, one naming a missing file
// fails loudly instead of quietly booting the system's QEMU or kernel, and a lane kernel's
// modules (.ko.xz, some built in) end up decompressed in the initramfs, keyed apart from the
// system kernel's.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "harness/qemu_harness.h"
#include "test_support.h"

namespace evmdk::qemu {
namespace {

namespace fs = std::filesystem;

// Sets (or unsets) one environment variable for a scope, restoring it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A lane kernel as install-lanes.sh unpacks it: vmlinuz, and a modules directory where every
// module the guest loads is built in except erofs (.ko.xz, depending on libcrc32c.ko.xz) and
// loop (plain .ko).
struct FakeLaneKernel {
  std::string kernel, modules;
};

FakeLaneKernel make_fake_lane_kernel(const test::TempDir& temp) {
  FakeLaneKernel lane{temp / "boot/vmlinuz-6.12.95+test-amd64", temp / "modules/6.12.95+test-amd64"};
  test::make_tree(temp.path(), {{"boot/vmlinuz-6.12.95+test-amd64", "not a kernel"},
                                {"modules/6.12.95+test-amd64/kernel/fs/erofs/erofs.ko", "erofs module"},
                                {"modules/6.12.95+test-amd64/kernel/lib/libcrc32c.ko", "libcrc32c module"},
                                {"modules/6.12.95+test-amd64/kernel/drivers/block/loop.ko", "loop module"}});
  for (const char* module : {"kernel/fs/erofs/erofs.ko", "kernel/lib/libcrc32c.ko"}) {
    auto xz = test::run({"xz", "--force", lane.modules + "/" + module});
    if (xz.exit_code != 0) throw std::runtime_error("xz failed: " + xz.err);
  }
  std::string builtin;
  for (const auto& name : guest_module_names()) {
    if (name != "erofs" && name != "loop" && name != "libcrc32c") builtin += "kernel/x/" + name + ".ko\n";
  }
  test::write_file(lane.modules + "/modules.builtin", builtin);
  test::write_file(lane.modules + "/modules.dep",
                   "kernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko.xz\n"
                   "kernel/lib/libcrc32c.ko.xz:\n"
                   "kernel/drivers/block/loop.ko:\n");
  return lane;
}

TEST(HarnessEnvironment, LaneVariablesPickQemuFirmwareKernelAndModules) {
  test::TempDir temp;
  auto lane = make_fake_lane_kernel(temp);
  ScopedEnv qemu("EVMDK_QEMU_BINARY", "/bin/true");
  ScopedEnv datadirs("EVMDK_QEMU_DATADIRS", temp.path() + "::" + temp / "boot");
  ScopedEnv kernel("EVMDK_QEMU_KERNEL", lane.kernel);
  ScopedEnv modules("EVMDK_QEMU_MODULES_DIR", lane.modules);
  auto env = GuestEnvironment::detect("/bin/true");
  EXPECT_EQ(env.qemu, "/bin/true");
  EXPECT_EQ(env.qemu_datadirs, (std::vector<fs::path>{temp.path(), temp / "boot"}));
  EXPECT_EQ(env.kernel, lane.kernel);
  EXPECT_EQ(env.kernel_version, "6.12.95+test-amd64");
  EXPECT_EQ(env.kernel_major_minor(), (std::pair{6, 12}));
  EXPECT_EQ(env.modules_dir, lane.modules);
}

TEST(HarnessEnvironment, LaneVariableNamingAMissingFileFailsNamingIt) {
  test::TempDir temp;
  auto lane = make_fake_lane_kernel(temp);
  auto error_of = [] {
    try {
      GuestEnvironment::detect("/bin/true");
    } catch (const HarnessError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  {
    ScopedEnv qemu("EVMDK_QEMU_BINARY", temp / "no-such-qemu");
    EXPECT_NE(error_of().find("EVMDK_QEMU_BINARY=" + temp / "no-such-qemu"), std::string::npos) << error_of();
  }
  {
    ScopedEnv datadirs("EVMDK_QEMU_DATADIRS", temp.path() + ":" + temp / "no-such-dir");
    EXPECT_NE(error_of().find(temp / "no-such-dir"), std::string::npos) << error_of();
  }
  {
    ScopedEnv kernel("EVMDK_QEMU_KERNEL", temp / "boot/vmlinuz-6.12.0-missing");
    EXPECT_NE(error_of().find("EVMDK_QEMU_KERNEL="), std::string::npos) << error_of();
  }
  {
    // The lane's kernel with no modules directory: not the system's /lib/modules silently.
    ScopedEnv kernel("EVMDK_QEMU_KERNEL", lane.kernel);
    ScopedEnv modules("EVMDK_QEMU_MODULES_DIR", temp / "modules/none");
    EXPECT_NE(error_of().find(temp / "modules/none/modules.dep"), std::string::npos) << error_of();
  }
}

TEST(HarnessEnvironment, CompressedAndBuiltinModulesOfALaneKernel) {
  EVMDK_REQUIRE_TOOLS("xz", "cpio", "strip", "ldd");
  test::TempDir temp;
  auto lane = make_fake_lane_kernel(temp);
  // Built-in modules are skipped, the rest come dependencies first, by their .ko.xz paths.
  EXPECT_EQ(detail::ordered_modules(lane.modules, guest_module_names()),
            (std::vector<std::string>{"kernel/lib/libcrc32c.ko.xz", "kernel/fs/erofs/erofs.ko.xz",
                                      "kernel/drivers/block/loop.ko"}));

  GuestEnvironment env;
  env.kernel = lane.kernel;
  env.kernel_version = "6.12.95+test-amd64";
  env.modules_dir = lane.modules;
  env.busybox = "/bin/true";
  env.cli = "/bin/true";
  env.cache_dir = temp / "cache";
  auto base = base_initramfs(env);
  // In the archive: plain .ko files (busybox insmod cannot read .xz) with the module's bytes,
  // and the load list names those.
  fs::create_directories(temp / "unpacked");
  // Only these paths: the archive's device nodes need root to unpack.
  auto unpacked = test::sh("cd '" + temp / "unpacked" + "' && cpio -id --quiet 'lib/modules/*' "
                           "etc/evmdk/modules < '" + base.string() + "'");
  ASSERT_EQ(unpacked.exit_code, 0) << unpacked.err;
  EXPECT_EQ(test::read_file(temp / "unpacked/lib/modules/kernel/fs/erofs/erofs.ko"), "erofs module");
  EXPECT_EQ(test::read_file(temp / "unpacked/lib/modules/kernel/lib/libcrc32c.ko"), "libcrc32c module");
  EXPECT_FALSE(fs::exists(temp / "unpacked/lib/modules/kernel/fs/erofs/erofs.ko.xz"));
  EXPECT_EQ(test::read_file(temp / "unpacked/etc/evmdk/modules"),
            "kernel/lib/libcrc32c.ko\nkernel/fs/erofs/erofs.ko\nkernel/drivers/block/loop.ko\n");

  // Another kernel (same release string, other file) gets its own cached base.
  test::write_file(temp / "boot/vmlinuz-other", "another kernel");
  env.kernel = temp / "boot/vmlinuz-other";
  EXPECT_NE(base_initramfs(env), base);
}

}  // namespace
}  // namespace evmdk::qemu
