// Every QEMU trap from the note has a named finding, on the right line, with the right severity.
#include "evmdk/vmdk/lint.h"

#include <gmock/gmock.h>

#include "evmdk/error.h"
#include "evmdk/vmdk/descriptor.h"
#include "test_support.h"

namespace evmdk::vmdk {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Header lines 1-7, extents from line 8.
const std::string kHeader =
    "# Disk DescriptorFile\nversion=1\nCID=0000abcd\nparentCID=ffffffff\n"
    "createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n";
const std::string kGood = "RW 8 FLAT \"/good\" 0\n";

LintReport lint(const std::string& text) {
  return lint_text(text, "/d/disk.vmdk", LintOptions{.check_files = false});
}

const Finding* find(const LintReport& r, std::string_view id) {
  for (const Finding& f : r.findings) {
    if (f.id == id) return &f;
  }
  return nullptr;
}

// Asserts the finding exists, is an error, and sits on `line`.
void expect_error(const std::string& text, std::string_view id, size_t line) {
  LintReport r = lint(text);
  const Finding* f = find(r, id);
  ASSERT_NE(f, nullptr) << "no " << id << " in:\n" << format_text(r) << "for:\n" << text;
  EXPECT_EQ(f->severity, Severity::Error) << id;
  EXPECT_EQ(f->line, line) << id << "\n" << format_text(r);
}

TEST(Lint, WriterOutputHasNoFindings) {
  Descriptor d;
  d.extents = {{"/a", 100, 0}, {"/b", kTwoGbExtentSectors * 2 + 1, 9}};
  LintReport r = lint(render(d));
  EXPECT_TRUE(r.findings.empty()) << format_text(r);
  d.create_type = CreateType::MonolithicFlat;
  r = lint(render(d));
  EXPECT_TRUE(r.findings.empty()) << format_text(r);
}

TEST(Lint, ExtentLineTraps) {
  expect_error(kHeader + kGood + "RDONLY 8 FLAT \"/a\" 0\n", "rdonly-extent", 9);
  expect_error(kHeader + "NOACCESS 8 FLAT \"/a\" 0\n" + kGood, "noaccess-extent", 8);
  expect_error(kHeader + kGood + "RW 8 ZERO\n" + kGood, "zero-extent", 9);
  expect_error(kHeader + kGood + "RW 8 ZERO \"/z\"\n", "zero-extent", 9);
  expect_error(kHeader + kGood + "\n" + kGood, "blank-before-extent", 9);
  expect_error(kHeader + kGood + "  \t\n" + kGood, "blank-before-extent", 9);
  expect_error(kHeader + kGood + "rw 8 FLAT \"/a\" 0\n", "wrong-case", 9);
  expect_error(kHeader + kGood + "RW 8 Flat \"/a\" 0\n", "wrong-case", 9);
  expect_error(kHeader + kGood + "RW 8 FLAT /a 0\n", "unquoted-name", 9);
  expect_error(kHeader + kGood + "RW 8 FLAT '/a' 0\n", "single-quoted-name", 9);
  expect_error(kHeader + kGood + "RW 8 FLAT \"/a\" 0x10\n", "hex-offset", 9);
  expect_error(kHeader + kGood + "RW 0x8 FLAT \"/a\" 0\n", "hex-sectors", 9);
  expect_error(kHeader + kGood + "RW 0 FLAT \"/a\" 0\n", "non-positive-sectors", 9);
  expect_error(kHeader + kGood + "RW 8 FLAT \"/" + std::string(520, 'x') + "\" 0\n",
               "path-too-long", 9);
  expect_error(kHeader + kGood + "RW 8 SPARSE \"/a.vmdk\"\n", "unsupported-extent-type", 9);
}

TEST(Lint, BlankLineFindingPointsAtTheBlankLineAndNamesTheExtent) {
  LintReport r = lint(kHeader + kGood + "\n\n" + kGood);
  std::vector<const Finding*> blanks;
  for (const Finding& f : r.findings) {
    if (f.id == "blank-before-extent") blanks.push_back(&f);
  }
  ASSERT_EQ(blanks.size(), 2u);
  EXPECT_EQ(blanks[0]->line, 9u);
  EXPECT_EQ(blanks[1]->line, 10u);
  EXPECT_THAT(blanks[0]->message, HasSubstr("line 11"));
}

TEST(Lint, HeaderTraps) {
  std::string extents = "\n" + kGood;
  expect_error("CID=1\nparentCID=ffffffff\ncreateType = \"monolithicFlat\"\n" + extents,
               "create-type-spacing", 3);
  expect_error("CID=1\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n" + extents,
               "unsupported-create-type", 3);
  expect_error("CID=1\nparentCID=ffffffff\n" + extents, "missing-create-type", 0);
  expect_error("# createType notes\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" +
                   extents,
               "early-create-type-substring", 1);
  expect_error("# CID values\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" +
                   extents,
               "early-cid-substring", 1);
  // parentCID before CID: QEMU reads CID from inside "parentCID".
  expect_error("parentCID=ffffffff\nCID=1\ncreateType=\"monolithicFlat\"\n" + extents,
               "early-cid-substring", 1);
  expect_error("CID = 1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" + extents,
               "unreadable-cid", 1);
  expect_error("CID=1\ncreateType=\"monolithicFlat\"\n" + extents, "missing-cid", 0);
  expect_error("CID=1\nparentCID=ffffffff\ncreatetype=\"monolithicFlat\"\n" + extents,
               "wrong-case", 3);
  expect_error("cid=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" + extents,
               "wrong-case", 1);
  expect_error("createType=\"monolithicFlat\"\n# " + std::string(10300, 'p') +
                   "\nCID=1\nparentCID=ffffffff\n" + extents,
               "unreadable-cid", 3);
  expect_error(kHeader + "parentFileNameHint=\"/base.vmdk\"\n" + kGood, "parent-file-name-hint",
               8);
  expect_error(kHeader + "RW 8 FLAT \"/x/parentFileNameHint\" 0\n", "parent-file-name-hint", 8);
}

TEST(Lint, WholeDescriptorTraps) {
  std::string big = kHeader + kGood + "#" + std::string(kQemuMaxDescriptorBytes, 'c') + "\n";
  expect_error(big, "descriptor-too-large", 9);
  expect_error(kHeader + kGood + std::string("\0", 1) + kGood, "nul-byte", 9);
  expect_error(kHeader + "RDONLY 8 FLAT \"/a\" 0\n", "no-usable-extent", 0);
  expect_error(kHeader + "RW 99999999999999999999 FLAT \"/a\" 0\n", "size-overflow", 0);
  expect_error(kHeader + "RW 8 FLAT \"/a\"\n", "qemu-open-error", 8);
}

TEST(Lint, WarningsDoNotCountAsErrors) {
  LintReport relative = lint(kHeader + "RW 8 FLAT \"layer.erofs\" 0\n");
  EXPECT_THAT(relative.ids(), ElementsAre("relative-path"));
  EXPECT_EQ(relative.errors(), 0u);
  EXPECT_EQ(relative.findings[0].severity, Severity::Warning);
  EXPECT_THAT(relative.findings[0].message, HasSubstr("/d/layer.erofs"));

  std::string many = kHeader;
  for (size_t i = 0; i <= kMaxExtentLines; ++i) many += fmt::format("RW 1 FLAT \"/f\" {}\n", i);
  LintReport fds = lint(many);
  EXPECT_THAT(fds.ids(), ElementsAre("extent-count-fd-limit"));

  std::string lines = kHeader + kGood;
  for (int i = 0; i < 1100; ++i) lines += "# comment\n";
  EXPECT_THAT(lint(lines).ids(), ElementsAre("virtualbox-line-limit"));
  EXPECT_THAT(lint(kHeader + "RW 8 FLAT \"/a\" 0 extra\n").ids(),
              ElementsAre("extent-trailing-text"));
  EXPECT_THAT(lint(kHeader + "RW 4194305 FLAT \"/a\" 0\n").ids(), ElementsAre("extent-over-2gib"));
  EXPECT_THAT(lint(kHeader + kGood + "what is this\n").ids(), ElementsAre("unknown-line"));
}

TEST(Lint, TheSafetyNetCatchesDifferencesWithoutANamedFinding) {
  // The offset is on the next line: QEMU reads it there, the spec reading sees no offset.
  LintReport r = lint(kHeader + "RW 8 FLAT \"/a\"\n5\n");
  EXPECT_THAT(r.ids(), Contains("readings-differ")) << format_text(r);
}

TEST(Lint, ChecksExtentFiles) {
  test::TempDir dir;
  test::write_file(dir / "layer", std::string(4096, 'x'));
  std::string text = kHeader + "RW 8 FLAT \"" + (dir / "layer") + "\" 0\n" +  // exactly fits
                     "RW 8 FLAT \"" + (dir / "layer") + "\" 1\n" +            // one sector past
                     "RW 8 FLAT \"" + (dir / "missing") + "\" 0\n";
  LintReport r = lint_text(text, dir / "disk.vmdk");
  EXPECT_THAT(r.ids(), ElementsAre("extent-past-eof", "missing-extent-file")) << format_text(r);
  EXPECT_EQ(r.findings[0].line, 9u);
  EXPECT_EQ(r.findings[1].line, 10u);
  EXPECT_THAT(r.findings[1].message, HasSubstr("No such file"));
}

TEST(Lint, SparseVmdkImagesAreNotDescriptors) {
  EXPECT_THAT(lint(std::string("KDMV\x01\0\0\0", 8) + std::string(500, '\0')).ids(),
              ElementsAre("not-a-descriptor"));
}

TEST(Lint, FdSetPathsAreNotLookedUpOnTheFileSystem) {
  Descriptor d;
  d.extents = {{"/dev/fdset/1", 8, 0}, {"/dev/fdset/2", 8, 0}};
  LintReport r = lint_text(render(d), "/d/disk.vmdk");  // with file checks
  EXPECT_TRUE(r.findings.empty()) << format_text(r);
}

TEST(Lint, ReportsAsJsonAndText) {
  LintReport r = lint(kHeader + "RDONLY 8 FLAT \"/a\" 0\n" + kGood + "RW 8 FLAT \"rel\" 0\n");
  nlohmann::json j = to_json(r);
  EXPECT_EQ(j["file"], "/d/disk.vmdk");
  EXPECT_EQ(j["errors"], 1);
  EXPECT_EQ(j["warnings"], 1);
  EXPECT_EQ(j["findings"][0]["id"], "rdonly-extent");
  EXPECT_EQ(j["findings"][0]["line"], 8);
  EXPECT_EQ(j["findings"][0]["severity"], "error");
  EXPECT_THAT(format_text(r), HasSubstr("/d/disk.vmdk:8: error: RDONLY extent"));
  EXPECT_THAT(format_text(r), HasSubstr("[rdonly-extent]\n"));
}

TEST(Lint, LintFileNamesAnUnreadableFile) {
  try {
    lint_file("/nonexistent/disk.vmdk");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/disk.vmdk"));
  }
}

}  // namespace
}  // namespace evmdk::vmdk
