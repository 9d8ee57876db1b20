// host/layout.h: the one writer and reader of layout.json. What compose writes reads back to
// the same document, identities included, and a malformed file is refused naming it.
#include <gmock/gmock.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/compose/layout.h"
#include "layer_fixtures.h"

namespace evmdk::host {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(Layout, WhatComposeWritesReadsBackIdenticallyWithEachFilesIdentity) {
  EVMDK_REQUIRE_TOOLS("mkfs.erofs");
  test::TempDir dir;
  test::make_layer(dir.path(), "top", "00000000-0000-4000-8000-0000000000e1");
  test::make_layer(dir.path(), "base", "00000000-0000-4000-8000-0000000000e2");
  ComposeOptions options;
  options.mode = ComposeMode::Gpt;
  options.layers = {{dir / "top.erofs", {}}, {dir / "base.erofs", {}}};
  options.output_dir = dir / "out";
  options.check_blkid = false;
  ComposeResult result = compose(options);
  std::string path = dir / "out/layout.json";
  Layout layout = read_layout(path);
  EXPECT_EQ(to_json(layout), nlohmann::json::parse(test::read_file(path)));
  ASSERT_EQ(layout.layers.size(), 2u);
  ASSERT_TRUE(layout.layers[1].identity.has_value());
  struct stat st {};
  ASSERT_EQ(::stat((dir / "base.erofs").c_str(), &st), 0);
  EXPECT_EQ(layout.layers[1].identity->inode, st.st_ino);
  EXPECT_EQ(layout.layers[1].identity->size, static_cast<uint64_t>(st.st_size));
  EXPECT_EQ(layout.layers[1].identity->head_sha256.size(), 64u);
  EXPECT_EQ(layout.entry_count, 128u);
}

TEST(Layout, MalformedFileIsRefusedNamingIt) {
  test::TempDir dir;
  std::string path = dir / "layout.json";
  test::write_file(path, R"({"mode":"gpt","layers":[{"index":"zero"}]})");
  try {
    (void)read_layout(path);
    ADD_FAILURE() << "accepted";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr(path + " is not a valid layout.json"));
  }
}

}  // namespace
}  // namespace evmdk::host
