// qemu-img as the oracle: for every QEMU trap the linter names, QEMU really behaves the way the
// finding says; and for random writer output, QEMU's layout and bytes are what we meant.
#include <fcntl.h>
#include <unistd.h>

#include <gmock/gmock.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <random>

#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/lint.h"
#include "test_support.h"

namespace evmdk::vmdk {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// A contiguous run: virtual [start, start+length) at byte `offset` of some file.
struct MapRun {
  uint64_t start, length, offset;
  bool operator==(const MapRun&) const = default;
};
void PrintTo(const MapRun& r, std::ostream* os) {
  *os << "{" << r.start << "+" << r.length << "@" << r.offset << "}";
}

// qemu-img map splits by zero/data status and does not name files in JSON; merge runs that
// continue each other so both sides compare at the same granularity.
void append_run(std::vector<MapRun>& runs, MapRun run) {
  if (!runs.empty() && runs.back().start + runs.back().length == run.start &&
      runs.back().offset + runs.back().length == run.offset) {
    runs.back().length += run.length;
  } else {
    runs.push_back(run);
  }
}

class Oracle : public ::testing::Test {
 protected:
  void SetUp() override { EVMDK_REQUIRE_TOOLS("qemu-img"); }

  // Extent files with distinct non-zero bytes.
  std::string data_file(const std::string& name, size_t sectors, char fill) {
    std::string path = dir_ / name;
    test::write_file(path, std::string(sectors * 512, fill));
    return path;
  }
  std::string header(std::string_view create_type = "twoGbMaxExtentFlat") {
    return fmt::format(
        "# Disk DescriptorFile\nversion=1\nCID=0000abcd\nparentCID=ffffffff\n"
        "createType=\"{}\"\n\n# Extent description\n",
        create_type);
  }
  std::string write_desc(const std::string& text, const std::string& name = "disk.vmdk") {
    std::string path = dir_ / name;
    test::write_file(path, text);
    return path;
  }
  static std::string flat(uint64_t sectors, const std::string& path, std::string offset = "0",
                          std::string access = "RW") {
    return fmt::format("{} {} FLAT \"{}\" {}\n", access, sectors, path, offset);
  }

  static test::CommandResult qemu_img(std::vector<std::string> args) {
    args.insert(args.begin(), "qemu-img");
    return test::run(args);
  }
  static int64_t qemu_size(const std::string& desc) {
    auto r = qemu_img({"info", "-f", "vmdk", "--output=json", desc});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return -1;
    return nlohmann::json::parse(r.out)["virtual-size"].get<int64_t>();
  }
  static std::vector<MapRun> qemu_map(const std::string& desc) {
    auto r = qemu_img({"map", "-f", "vmdk", "--output=json", desc});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<MapRun> runs;
    if (r.exit_code != 0) return runs;
    for (const auto& entry : nlohmann::json::parse(r.out)) {
      if (!entry.value("present", false)) continue;
      append_run(runs, {entry["start"].get<uint64_t>(), entry["length"].get<uint64_t>(),
                        entry["offset"].get<uint64_t>()});
    }
    return runs;
  }
  static std::vector<MapRun> our_map(const std::string& desc) {
    auto r = test::cli({"map", desc, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<MapRun> runs;
    if (r.exit_code != 0) return runs;
    const nlohmann::json parsed = nlohmann::json::parse(r.out);
    for (const auto& e : parsed["extents"]) {
      append_run(runs, {e["start"].get<uint64_t>(), e["length"].get<uint64_t>(),
                        e["offset"].get<uint64_t>()});
    }
    return runs;
  }
  static std::vector<std::string> lint_ids(const std::string& desc) {
    return lint_file(desc).ids();
  }
  // qemu-img compare against the bytes we expect the disk to present.
  bool qemu_presents(const std::string& desc, const std::string& expected_bytes) {
    std::string raw = dir_ / "expected.raw";
    test::write_file(raw, expected_bytes);
    auto r = qemu_img({"compare", "-f", "vmdk", "-F", "raw", desc, raw});
    EXPECT_LE(r.exit_code, 1) << r.err;
    return r.exit_code == 0;
  }

  test::TempDir dir_;
};

TEST_F(Oracle, WriterOutputOpensWithTheMeantLayout) {
  std::string a = data_file("a", 8, 'a'), b = data_file("b", 4, 'b');
  Descriptor d;
  d.extents = {{a, 8, 0}, {b, 2, 2}};
  std::string desc = dir_ / "disk.vmdk";
  write_descriptor_file(desc, d);
  EXPECT_EQ(qemu_size(desc), 10 * 512);
  EXPECT_EQ(qemu_map(desc), our_map(desc));
  EXPECT_TRUE(qemu_presents(desc, std::string(4096, 'a') + std::string(1024, 'b')));
  auto info = qemu_img({"info", "-f", "vmdk", desc});
  // QEMU reads our CID (the first 8 hex digits after "CID=").
  std::string text = test::read_file(desc);
  uint32_t cid = std::stoul(text.substr(text.find("CID=") + 4, 8), nullptr, 16);
  EXPECT_THAT(info.out, HasSubstr(fmt::format("cid: {}", cid)));
}

TEST_F(Oracle, BlankLineBeforeAnExtentMakesQemuAddItTwice) {
  std::string a = data_file("a", 8, 'a'), b = data_file("b", 4, 'b');
  std::string desc = write_desc(header() + flat(8, a) + "\n" + flat(4, b));
  EXPECT_THAT(lint_ids(desc), Contains("blank-before-extent"));
  EXPECT_EQ(qemu_size(desc), (8 + 4 + 4) * 512);  // b counted twice
  EXPECT_EQ(qemu_map(desc), our_map(desc));
  EXPECT_TRUE(qemu_presents(desc, std::string(4096, 'a') + std::string(4096, 'b')));
}

TEST_F(Oracle, RdonlyAndNoaccessExtentsAreSkipped) {
  std::string a = data_file("a", 8, 'a'), b = data_file("b", 4, 'b'), c = data_file("c", 2, 'c');
  for (std::string access : {"RDONLY", "NOACCESS"}) {
    std::string desc = write_desc(header() + flat(8, a) + flat(4, b, "0", access) + flat(2, c));
    auto ids = lint_ids(desc);
    EXPECT_THAT(ids, Contains(access == "RDONLY" ? "rdonly-extent" : "noaccess-extent"));
    EXPECT_EQ(qemu_size(desc), (8 + 2) * 512) << access;
    // c lands where b should have been.
    EXPECT_TRUE(qemu_presents(desc, std::string(4096, 'a') + std::string(1024, 'c')));
    EXPECT_EQ(qemu_map(desc), our_map(desc));
  }
}

TEST_F(Oracle, ZeroExtentsAreSkippedAndShiftLaterExtents) {
  std::string a = data_file("a", 8, 'a'), c = data_file("c", 2, 'c');
  std::string z = dir_ / "zero";
  test::write_file(z, std::string(4 * 512, '\0'));
  for (std::string zero : {std::string("RW 4 ZERO\n"), fmt::format("RW 4 ZERO \"{}\"\n", z)}) {
    std::string desc = write_desc(header() + flat(8, a) + zero + flat(2, c));
    EXPECT_THAT(lint_ids(desc), Contains("zero-extent"));
    EXPECT_EQ(qemu_size(desc), (8 + 2) * 512) << zero;  // the spec says 14 sectors
    EXPECT_TRUE(qemu_presents(desc, std::string(4096, 'a') + std::string(1024, 'c')));
    EXPECT_EQ(qemu_map(desc), our_map(desc));
  }
}

TEST_F(Oracle, HexOffsetIsReadAsZero) {
  std::string a = data_file("a", 8, 'a');
  test::write_file(a, std::string(2048, 'x') + std::string(2048, 'y'));
  std::string desc = write_desc(header() + flat(4, a, "0x4"));
  EXPECT_THAT(lint_ids(desc), Contains("hex-offset"));
  EXPECT_EQ(qemu_map(desc), (std::vector<MapRun>{{0, 2048, 0}}));
  EXPECT_EQ(qemu_map(desc), our_map(desc));
  EXPECT_TRUE(qemu_presents(desc, std::string(2048, 'x')));  // not the y half
}

TEST_F(Oracle, HexSectorsZeroSectorsAndBadQuotingSkipTheLine) {
  std::string a = data_file("a", 8, 'a'), b = data_file("b", 4, 'b');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"hex-sectors", fmt::format("RW 0x4 FLAT \"{}\" 0\n", b)},
      {"non-positive-sectors", fmt::format("RW 0 FLAT \"{}\" 0\n", b)},
      {"unquoted-name", fmt::format("RW 4 FLAT {} 0\n", b)},
      {"single-quoted-name", fmt::format("RW 4 FLAT '{}' 0\n", b)},
      {"wrong-case", fmt::format("rw 4 FLAT \"{}\" 0\n", b)},
  };
  for (const auto& [id, line] : cases) {
    std::string desc = write_desc(header() + flat(8, a) + line);
    EXPECT_THAT(lint_ids(desc), Contains(id));
    EXPECT_EQ(qemu_size(desc), 8 * 512) << id;
    EXPECT_EQ(qemu_map(desc), our_map(desc)) << id;
  }
}

TEST_F(Oracle, WrongCaseTypeLongPathsAndMissingOffsetsFailTheOpen) {
  std::string a = data_file("a", 8, 'a');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"wrong-case", fmt::format("RW 4 flat \"{}\" 0\n", a)},
      {"path-too-long", fmt::format("RW 4 FLAT \"/{}\" 0\n", std::string(520, 'p'))},
      {"qemu-open-error", fmt::format("RW 4 FLAT \"{}\"\n", a)},
  };
  for (const auto& [id, line] : cases) {
    std::string desc = write_desc(header() + line);
    auto ids = lint_ids(desc);
    EXPECT_THAT(ids, Contains(id));
    EXPECT_THAT(ids, Contains("qemu-open-error"));
    auto r = qemu_img({"info", "-f", "vmdk", desc});
    EXPECT_NE(r.exit_code, 0) << id;
    EXPECT_THAT(r.err, HasSubstr("Invalid extent line")) << id;
    auto ours = test::cli({"map", desc});
    EXPECT_EQ(ours.exit_code, 1);
    EXPECT_THAT(ours.err, HasSubstr("Invalid extent line")) << id;
  }
}

TEST_F(Oracle, CreateTypeSpacingAndUnknownTypesFailTheOpen) {
  std::string a = data_file("a", 8, 'a');
  std::string base = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n";
  std::string spaced = write_desc(base + "createType = \"monolithicFlat\"\n\n#\n" + flat(8, a));
  EXPECT_THAT(lint_ids(spaced), Contains("create-type-spacing"));
  auto r = qemu_img({"info", "-f", "vmdk", spaced});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("Unsupported image type ' '"));

  std::string unknown = write_desc(base + "createType=\"fullDevice\"\n\n#\n" + flat(8, a));
  EXPECT_THAT(lint_ids(unknown), Contains("unsupported-create-type"));
  r = qemu_img({"info", "-f", "vmdk", unknown});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("fullDevice"));

  std::string lower = write_desc(base + "createtype=\"monolithicFlat\"\n\n#\n" + flat(8, a));
  EXPECT_THAT(lint_ids(lower), Contains("wrong-case"));
  EXPECT_NE(qemu_img({"info", "-f", "vmdk", lower}).exit_code, 0);

  std::string early = write_desc("# createType notes\n" + base +
                                 "createType=\"monolithicFlat\"\n\n#\n" + flat(8, a));
  EXPECT_THAT(lint_ids(early), Contains("early-create-type-substring"));
  EXPECT_NE(qemu_img({"info", "-f", "vmdk", early}).exit_code, 0);
}

TEST_F(Oracle, QemuTakesTheFirstCidSubstringInTheFirst10KiB) {
  std::string a = data_file("a", 8, 'a');
  std::string tail = "createType=\"monolithicFlat\"\n\n#\n" + flat(8, a);
  // A comment mentioning CID first: QEMU reads "values..." as the CID and fails.
  std::string comment = write_desc("# CID values\nCID=1\nparentCID=ffffffff\n" + tail);
  EXPECT_THAT(lint_ids(comment), Contains("early-cid-substring"));
  auto r = qemu_img({"info", "-f", "vmdk", comment});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("Invalid argument"));
  // parentCID first: QEMU opens it, but reads the CID out of "parentCID".
  std::string parent_first = write_desc("parentCID=ffffffff\nCID=1\n" + tail);
  EXPECT_THAT(lint_ids(parent_first), Contains("early-cid-substring"));
  r = qemu_img({"info", "-f", "vmdk", parent_first});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cid: 4294967295"));
  // Spaces, or a CID line past the first 10 KiB, fail with a bare "Invalid argument".
  std::string spaced = write_desc("CID = 1\nparentCID=ffffffff\n" + tail);
  EXPECT_THAT(lint_ids(spaced), Contains("unreadable-cid"));
  EXPECT_THAT(qemu_img({"info", "-f", "vmdk", spaced}).err, HasSubstr("Invalid argument"));
  std::string late = write_desc("createType=\"monolithicFlat\"\n# " + std::string(10300, 'p') +
                                "\nCID=1\nparentCID=ffffffff\n\n#\n" + flat(8, a));
  EXPECT_THAT(lint_ids(late), Contains("unreadable-cid"));
  EXPECT_THAT(qemu_img({"info", "-f", "vmdk", late}).err, HasSubstr("Invalid argument"));
}

TEST_F(Oracle, ParentFileNameHintMakesQemuUseABackingFile) {
  std::string a = data_file("a", 8, 'a');
  std::string desc =
      write_desc(header() + "parentFileNameHint=\"/nonexistent/base.vmdk\"\n" + flat(8, a));
  EXPECT_THAT(lint_ids(desc), Contains("parent-file-name-hint"));
  auto r = qemu_img({"info", "-f", "vmdk", desc});
  EXPECT_THAT(r.out, HasSubstr("backing file: /nonexistent/base.vmdk")) << r.err;
}

TEST_F(Oracle, QemuCutsTheDescriptorAt1048575Bytes) {
  test::write_file(dir_ / "a", std::string(64 * 512, 'a') + std::string(512, 'z'));
  std::string a = dir_ / "a";
  std::string text = header() + flat(1, a, "0");
  // Place the last extent so the cut falls after the first digit of its offset "64".
  std::string last = fmt::format("RW 1 FLAT \"{}\" 6", a);
  size_t pad = kQemuMaxDescriptorBytes - text.size() - last.size() - 2;
  text += "#" + std::string(pad, 'c') + "\n" + last + "4\n";
  ASSERT_EQ(text.find(last) + last.size(), kQemuMaxDescriptorBytes);
  std::string desc = write_desc(text);
  LintReport report = lint_file(desc);
  EXPECT_THAT(report.ids(), Contains("descriptor-too-large"));
  EXPECT_THAT(report.ids(), Contains("virtualbox-line-limit").Times(0));
  // QEMU reads offset 6 instead of 64: the second sector shows 'a', not 'z'.
  EXPECT_EQ(qemu_map(desc), our_map(desc));
  EXPECT_TRUE(qemu_presents(desc, std::string(1024, 'a')));
}

TEST_F(Oracle, QemuStopsAtANulByte) {
  std::string a = data_file("a", 8, 'a'), b = data_file("b", 4, 'b');
  std::string desc = write_desc(header() + flat(8, a) + std::string("\0", 1) + flat(4, b));
  EXPECT_THAT(lint_ids(desc), Contains("nul-byte"));
  EXPECT_EQ(qemu_size(desc), 8 * 512);
}

TEST_F(Oracle, NoUsableExtentMakesQemuImgInfoAbort) {
  std::string a = data_file("a", 8, 'a');
  std::string desc = write_desc(header() + flat(8, a, "0", "RDONLY"));
  EXPECT_THAT(lint_ids(desc), Contains("no-usable-extent"));
  auto r = qemu_img({"info", "-f", "vmdk", desc});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("num_extents"));
}

TEST_F(Oracle, MissingExtentFileFailsTheOpenAndShortFilesReadAsZeros) {
  std::string a = data_file("a", 8, 'a');
  std::string missing = write_desc(header() + flat(8, dir_ / "gone"), "missing.vmdk");
  EXPECT_THAT(lint_ids(missing), Contains("missing-extent-file"));
  auto r = qemu_img({"info", "-f", "vmdk", missing});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("gone"));

  std::string past = write_desc(header() + flat(12, a, "4"), "past.vmdk");
  EXPECT_THAT(lint_ids(past), Contains("extent-past-eof"));
  EXPECT_EQ(qemu_size(past), 12 * 512);
  EXPECT_TRUE(qemu_presents(past, std::string(2048, 'a') + std::string(4096, '\0')));
}

TEST_F(Oracle, RelativeNamesResolveAgainstTheDescriptorPathAsGiven) {
  data_file("a", 8, 'a');
  std::string desc = write_desc(header() + flat(8, "a"));
  EXPECT_THAT(lint_ids(desc), Contains("relative-path"));
  // From another working directory, QEMU still finds dir/a next to the descriptor.
  auto r = test::sh(fmt::format("cd / && qemu-img compare -f vmdk -F raw '{}' '{}'", desc,
                                dir_ / "a"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(Oracle, ASparseVmdkIsNotADescriptor) {
  std::string sparse = dir_ / "sparse.vmdk";
  auto r = qemu_img({"create", "-f", "vmdk", sparse, "1M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(lint_ids(sparse), testing::ElementsAre("not-a-descriptor"));
  auto cli = test::cli({"lint", sparse});
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_THAT(cli.out, HasSubstr("sparse VMDK image"));
}

TEST_F(Oracle, EachExtentLineCostsQemuAnFd) {
  std::string a = data_file("a", 8, 'a');
  std::string many = header();
  for (int i = 0; i < 100; ++i) many += flat(1, a, std::to_string(i % 8));
  std::string desc = write_desc(many);
  auto r = test::sh(fmt::format("ulimit -n 64 && qemu-img info -f vmdk '{}'", desc));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("Too many open files"));
  std::string few = header();
  for (int i = 0; i < 20; ++i) few += flat(1, a, std::to_string(i % 8));
  EXPECT_EQ(test::sh(fmt::format("ulimit -n 64 && qemu-img info -f vmdk '{}'",
                                 write_desc(few, "few.vmdk")))
                .exit_code,
            0);
}

TEST_F(Oracle, AnOffsetOnTheNextLineIsReadFromThere) {
  test::write_file(dir_ / "a", std::string(512, 'x') + std::string(512, 'y'));
  std::string desc = write_desc(header() + fmt::format("RW 1 FLAT \"{}\"\n1\n", dir_ / "a"));
  EXPECT_THAT(lint_ids(desc), Contains("readings-differ"));
  EXPECT_TRUE(qemu_presents(desc, std::string(512, 'y')));
  EXPECT_EQ(qemu_map(desc), our_map(desc));
}

TEST_F(Oracle, TwoGbMaxExtentFlatSplitsAreReadBack) {
  std::string big = dir_ / "big";
  {
    UniqueFd fd = open_or_throw(big, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_EQ(::ftruncate(fd.get(), (kTwoGbExtentSectors + 100) * 512), 0);
    write_all(fd.get(), "MARK", 4, big, kTwoGbExtentSectors * 512 + 1000);
  }
  Descriptor d;
  d.extents = {{big, kTwoGbExtentSectors + 100, 0}};
  std::string desc = dir_ / "big.vmdk";
  write_descriptor_file(desc, d);
  EXPECT_THAT(test::read_file(desc), HasSubstr(fmt::format("RW 100 FLAT \"{}\" 4194304\n", big)));
  EXPECT_TRUE(lint_file(desc).findings.empty());
  EXPECT_EQ(qemu_size(desc), int64_t((kTwoGbExtentSectors + 100) * 512));
  EXPECT_EQ(qemu_map(desc), our_map(desc));
  auto r = qemu_img({"compare", "-f", "vmdk", "-F", "raw", desc, big});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// Writer output with 1..300 extents over real sparse files: qemu-img's layout equals ours,
// qemu-img compare sees exactly the concatenated extent bytes, and lint has nothing to say.
TEST_F(Oracle, RandomWriterOutputMatchesQemu) {
  const std::vector<size_t> counts = {1, 300, 0, 0, 0, 0};
  for (uint32_t seed = 1; seed <= counts.size(); ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    std::mt19937 rng(seed);
    auto uniform = [&rng](uint64_t lo, uint64_t hi) {
      return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };
    test::TempDir work;
    // A handful of sparse files, each with a few random non-zero blocks.
    std::vector<std::string> files;
    std::vector<std::string> contents;
    size_t file_count = uniform(1, 12);
    for (size_t i = 0; i < file_count; ++i) {
      std::string bytes(uniform(1, 64) * 512, '\0');
      for (int patch = uniform(0, 4); patch > 0; --patch) {
        size_t at = uniform(0, bytes.size() - 1);
        size_t len = std::min<size_t>(uniform(1, 700), bytes.size() - at);
        for (size_t k = 0; k < len; ++k) bytes[at + k] = static_cast<char>(uniform(1, 255));
      }
      std::string path = work / fmt::format("layer-{}.erofs", i);
      UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ASSERT_EQ(::ftruncate(fd.get(), bytes.size()), 0);
      // Write only the non-zero 512-byte blocks so the files stay sparse.
      for (size_t block = 0; block < bytes.size(); block += 512) {
        std::string_view chunk(bytes.data() + block, 512);
        if (chunk.find_first_not_of('\0') != std::string_view::npos) {
          write_all(fd.get(), chunk.data(), chunk.size(), path, block);
        }
      }
      files.push_back(path);
      contents.push_back(std::move(bytes));
    }
    Descriptor d;
    d.create_type = uniform(0, 1) ? CreateType::TwoGbMaxExtentFlat : CreateType::MonolithicFlat;
    size_t extent_count = counts[seed - 1] ? counts[seed - 1] : uniform(1, 300);
    std::string expected;
    for (size_t i = 0; i < extent_count; ++i) {
      size_t f = uniform(0, file_count - 1);
      uint64_t file_sectors = contents[f].size() / 512;
      uint64_t offset = uniform(0, file_sectors - 1);
      uint64_t sectors = uniform(1, file_sectors - offset);
      d.extents.push_back({files[f], sectors, offset});
      expected += contents[f].substr(offset * 512, sectors * 512);
    }
    std::string desc = work / "merged.vmdk";
    write_descriptor_file(desc, d);

    auto lint = test::cli({"lint", desc, "--json"});
    EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err;
    EXPECT_TRUE(nlohmann::json::parse(lint.out)["findings"].empty()) << lint.out;

    EXPECT_EQ(qemu_map(desc), our_map(desc));
    std::string raw = work / "expected.raw";
    test::write_file(raw, expected);
    auto compare = qemu_img({"compare", "-f", "vmdk", "-F", "raw", desc, raw});
    EXPECT_EQ(compare.exit_code, 0) << compare.out << compare.err;

    // The in-process map agrees byte for byte at random probes.
    ExtentMap map = ExtentMap::from_file(desc);
    ASSERT_EQ(map.virtual_size(), expected.size());
    for (int probe = 0; probe < 200; ++probe) {
      uint64_t at = uniform(0, expected.size() - 1);
      auto location = map.find(at);
      ASSERT_TRUE(location.has_value());
      size_t f = std::find(files.begin(), files.end(), location->extent->path) - files.begin();
      ASSERT_LT(f, files.size());
      ASSERT_EQ(contents[f][location->file_offset], expected[at]) << "virtual offset " << at;
    }
  }
}

// Differential test of the QEMU reading: writer output with random trap mutations. Whatever
// read_as_qemu() says (opens or not, CID, parentCID, createType, every extent's file and size,
// the layout) must be what qemu-img reports for the same bytes.
TEST_F(Oracle, MutatedDescriptorsAreReadExactlyAsQemuReadsThem) {
  std::vector<std::string> files;
  for (char c : {'p', 'q', 'r'}) {
    std::string path = dir_ / std::string(1, c);
    std::string bytes;
    for (int sector = 0; sector < 64; ++sector) bytes += std::string(512, char(c + sector));
    test::write_file(path, bytes);
    files.push_back(path);
  }
  const std::string desc = dir_ / "mutated.vmdk";
  size_t refused = 0, empty = 0, opened = 0;
  for (uint32_t seed = 1; seed <= 80; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&rng](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
    Descriptor d;
    d.create_type = pick(2) ? CreateType::TwoGbMaxExtentFlat : CreateType::MonolithicFlat;
    for (size_t i = 0, n = 2 + pick(4); i < n; ++i) {
      uint64_t offset = pick(60);
      d.extents.push_back({files[pick(files.size())], 1 + pick(64 - offset), offset});
    }
    std::vector<std::string> lines;
    {
      std::string text = render(d);
      for (size_t p = 0; p < text.size();) {
        size_t eol = text.find('\n', p);
        lines.push_back(text.substr(p, eol - p));
        p = eol + 1;
      }
    }
    auto extent_lines = [&lines] {
      std::vector<size_t> out;
      for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].rfind("RW ", 0) == 0) out.push_back(i);
      }
      return out;
    };
    auto replace_word = [](std::string& line, size_t word, const std::string& with) {
      size_t start = 0;
      for (size_t w = 0; w < word; ++w) start = line.find(' ', start) + 1;
      size_t end = line.find(' ', start);
      line.replace(start, end == std::string::npos ? std::string::npos : end - start, with);
    };
    std::vector<std::string> applied;
    for (size_t m = 0, count = 1 + pick(3); m < count; ++m) {
      auto ext = extent_lines();
      if (ext.empty()) break;
      std::string& line = lines[ext[pick(ext.size())]];
      size_t what = pick(22);
      applied.push_back(std::to_string(what));
      switch (what) {
        case 0: lines.insert(lines.begin() + ext[pick(ext.size())], ""); break;
        case 1: lines.insert(lines.begin() + ext[pick(ext.size())], " \t"); break;
        case 2: replace_word(line, 0, pick(2) ? "RDONLY" : "NOACCESS"); break;
        case 3: replace_word(line, 0, pick(2) ? "rw" : "Rw"); break;
        case 4: replace_word(line, 2, pick(2) ? "flat" : "VMFS"); break;
        case 5: line = fmt::format("RW {} ZERO", 1 + pick(8)); break;
        case 6: line += " trailing words"; break;
        case 7: line = line.substr(0, line.rfind(' ')); break;  // drop the offset
        case 8: line = line.substr(0, line.rfind(' ')) + " 0x" + std::to_string(1 + pick(9)); break;
        case 9: replace_word(line, 1, pick(2) ? "0" : "-3"); break;
        case 10: replace_word(line, 1, "0x4"); break;
        case 11: {  // unquote or single-quote the name
          std::string q = pick(2) ? "'" : "";
          for (char& c : line) if (c == '"') c = '\x01';
          size_t a = line.find('\x01'), b = line.rfind('\x01');
          line = line.substr(0, a) + q + line.substr(a + 1, b - a - 1) + q + line.substr(b + 1);
          break;
        }
        case 12: lines.insert(lines.begin() + pick(4), "# CID values and createType notes"); break;
        case 13: lines.insert(lines.begin(), "# the CID " + std::to_string(pick(99)) + " is"); break;
        case 14: std::swap(lines[2], lines[3]); break;  // parentCID before CID
        case 15: lines[4] = "createType = \"" + lines[4].substr(12); break;
        case 16: line = "  \t" + line; break;
        case 17: for (char& c : line) if (c == ' ' && pick(2)) c = '\t'; break;
        case 18: line += "\r"; break;
        case 19: lines.insert(lines.begin() + ext[pick(ext.size())], "\r"); break;
        case 20: { size_t at = line.rfind(' '); line = line.substr(0, at) + "\n" + line.substr(at + 1); break; }
        case 21: lines.insert(lines.begin() + ext.back() + 1, line); break;  // duplicate
      }
    }
    std::string text;
    for (const auto& line : lines) text += line + "\n";
    test::write_file(desc, text);
    SCOPED_TRACE(fmt::format("seed {} mutations {}:\n{}", seed, fmt::join(applied, ","), text));

    QemuReading ours = read_as_qemu(text, desc);
    auto info = qemu_img({"info", "-f", "vmdk", "--output=json", desc});
    if (!ours.opens()) {
      EXPECT_NE(info.exit_code, 0) << "we expected: " << ours.open_error;
      ++refused;
      continue;
    }
    if (ours.extents.empty()) {
      EXPECT_NE(info.exit_code, 0);  // qemu-img info aborts on an empty disk
      ++empty;
      continue;
    }
    ++opened;
    ASSERT_EQ(info.exit_code, 0) << info.err;
    auto json = nlohmann::json::parse(info.out);
    EXPECT_EQ(json["virtual-size"], ours.total_sectors * 512);
    const auto& data = json["format-specific"]["data"];
    EXPECT_EQ(data["cid"], *ours.cid);
    EXPECT_EQ(data["parent-cid"], *ours.parent_cid);
    EXPECT_EQ(data["create-type"], *ours.create_type);
    ASSERT_EQ(data["extents"].size(), ours.extents.size());
    for (size_t i = 0; i < ours.extents.size(); ++i) {
      EXPECT_EQ(data["extents"][i]["filename"], ours.extents[i].resolved_path) << i;
      EXPECT_EQ(data["extents"][i]["virtual-size"], ours.extents[i].sectors * 512) << i;
    }
    std::vector<MapRun> expected;
    const ExtentMap map = ExtentMap::from_qemu_reading(ours);
    for (const auto& e : map.extents()) {
      append_run(expected, {e.virtual_offset, e.length, e.file_offset});
    }
    EXPECT_EQ(qemu_map(desc), expected);
  }
  // Both outcomes were exercised, not just one.
  EXPECT_GE(opened, 30u);
  EXPECT_GE(refused, 10u);
  std::printf("mutations: %zu opened, %zu refused, %zu empty\n", opened, refused, empty);
}

}  // namespace
}  // namespace evmdk::vmdk
