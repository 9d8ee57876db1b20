// The QEMU arguments `compose --attach pmem` writes, given to a real QEMU (the lane's, or
// qemu-system-x86_64; no guest is booted: the machine stays stopped, -S): the virtio-pmem
// device appears in `info memory-devices` with the image's size, maxmem = RAM + maxmem_bytes is
// exactly enough (2 MiB less is refused), and with --fdset QEMU maps the fd it inherited.
// The guest side (DAX mounts, page cache) is tests/qemu/pmem_dax_qemu_test.cpp.
#include <gmock/gmock.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/host/compose/compose.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kRam = 128u << 20;

std::string qemu_binary() {
  const char* lane = std::getenv("EVMDK_QEMU_BINARY");
  return lane && *lane ? lane : "qemu-system-x86_64";
}

std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs QEMU stopped with the monitor on stdin, `redirect` appended to the shell command line.
test::CommandResult run_qemu(const json& pmem, uint64_t maxmem, const std::string& redirect = "") {
  std::string line = quoted(qemu_binary()) + " -M pc -nodefaults -display none -S -monitor stdio" +
                     " -m " + std::to_string(kRam >> 20) + "M,maxmem=" + std::to_string(maxmem);
  // A lane's QEMU finds its firmware through EVMDK_QEMU_DATADIRS (dir[:dir...], each -L dir).
  if (const char* dirs = std::getenv("EVMDK_QEMU_DATADIRS")) {
    std::string list = dirs;
    for (size_t at = 0; at <= list.size();) {
      size_t end = std::min(list.find(':', at), list.size());
      if (end > at) line += " -L " + quoted(list.substr(at, end - at));
      at = end + 1;
    }
  }
  for (const auto& arg : pmem["args"]) line += " " + quoted(arg.get<std::string>());
  line += " " + redirect;
  return test::sh("printf 'info memory-devices\\ninfo pci\\nquit\\n' | " + line);
}

class ComposePmemQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", qemu_binary());
    test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-0000000000f1",
                     std::string(9000, 't'));
    test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000f2");
  }
  ComposeResult compose_pmem(const std::string& out, bool fdset) {
    ComposeOptions options;
    options.layers = {{dir / "top.erofs", {}}, {dir / "base.erofs", {}}};
    options.output_dir = out;
    options.format = DiskFormat::Raw;
    options.allow_copy = true;
    options.pmem.attach = DiskAttach::Pmem;
    options.pmem.pci_address = "0000:00:10.0";
    options.fdset = fdset;
    options.first_fdset_id = 7;
    return compose(options);
  }
  test::TempDir dir;
};

TEST_F(ComposePmemQemu, QemuTakesTheArgumentsWithExactlyTheMaxmemTheySay) {
  ComposeResult result = compose_pmem(dir / "out", false);
  const json& pmem = result.qemu["pmem"];
  uint64_t size = pmem["maxmem_bytes"];
  auto started = run_qemu(pmem, kRam + size);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_THAT(started.out, AllOf(HasSubstr("virtio-pmem"), HasSubstr("size: " + std::to_string(size)),
                                 HasSubstr("memdev: /objects/" + result.serial + "-mem"),
                                 HasSubstr("Bus  0, device  16, function 0")));
  auto short_of_room = run_qemu(pmem, kRam + size - (2u << 20));
  EXPECT_NE(short_of_room.exit_code, 0);
  EXPECT_THAT(short_of_room.err, HasSubstr("not enough space"));
}

TEST_F(ComposePmemQemu, FdsetMapsTheInheritedFd) {
  ComposeResult result = compose_pmem(dir / "out", true);
  const json& pmem = result.qemu["pmem"];
  ASSERT_EQ(pmem["inherit_fd"]["fd"], 7);
  uint64_t size = pmem["maxmem_bytes"];
  auto started = run_qemu(pmem, kRam + size, "7< " + quoted(pmem["inherit_fd"]["path"]));
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_THAT(started.out, HasSubstr("size: " + std::to_string(size)));
  // Without the fd, QEMU cannot open the backing file: nothing else gives it the image.
  auto without = run_qemu(pmem, kRam + size);
  EXPECT_NE(without.exit_code, 0);
  EXPECT_THAT(without.err, HasSubstr("/proc/self/fd/7"));
}

}  // namespace
}  // namespace evmdk::host
