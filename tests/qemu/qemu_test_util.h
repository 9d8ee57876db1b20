#pragma once
// gtest glue over the QEMU harness: a fixture that finds the guest environment (or skips/fails
// per EVMDK_REQUIRE_QEMU) and gives each test a temp dir, and an assertion that prints the
// whole guest console when a scenario did not pass.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness/qemu_harness.h"
#include "test_support.h"

namespace evmdk::qemu {

inline ::testing::AssertionResult guest_passed(const GuestOutcome& outcome,
                                               const std::vector<std::string>& expected) {
  if (outcome.problems(expected).empty()) {
    // EVMDK_QEMU_VERBOSE=1 shows the guest console of passing runs too.
    if (const char* verbose = std::getenv("EVMDK_QEMU_VERBOSE"); verbose && std::string(verbose) == "1") {
      std::fputs(outcome.report(expected).c_str(), stderr);
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "guest scenario failed:\n" << outcome.report(expected);
}

#define EVMDK_EXPECT_GUEST_PASSED(outcome, ...) \
  EXPECT_TRUE(::evmdk::qemu::guest_passed((outcome), __VA_ARGS__))
#define EVMDK_ASSERT_GUEST_PASSED(outcome, ...) \
  ASSERT_TRUE(::evmdk::qemu::guest_passed((outcome), __VA_ARGS__))

class QemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_QEMU();
    EVMDK_REQUIRE_TOOLS("mkfs.erofs", "mkfs.ext4", "strip", "ldd");
    env_ = GuestEnvironment::detect(test::cli_path());
  }

  GuestConfig config(const std::string& name) const {
    GuestConfig c;
    c.name = name;
    c.work_dir = temp_.path();
    return c;
  }

  std::string path(const std::string& name) const { return temp_ / name; }

  test::TempDir temp_;
  GuestEnvironment env_;
};

}  // namespace evmdk::qemu
