#include "evmdk/host/verify/verify.h"
#include "evmdk/host/verity/verity.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "evmdk/error.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verify/verify_progress.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/extent_map.h"
#include "evmdk/vmdk/parser.h"

namespace evmdk::host {

namespace fs = std::filesystem;

namespace {

// layout.json decides which files verify (as root) reads and digests, so it only counts when
// nobody but us (or root) could have written it or swapped it: owned by root or the caller,
// not writable by group or others, in such a directory too. Otherwise whoever wrote the
// descriptor could also write the layout that "authorises" it (e.g. to digest /etc/shadow).
void refuse_untrusted_layout(const std::string& layout_path) {
  const uid_t me = ::geteuid();
  auto check = [&](const std::string& path, bool directory) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw_errno("verify: cannot inspect {}", path);
    std::string problem;
    if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
      problem = fmt::format("is a {}", file_type_name(st.st_mode));
    } else if (st.st_uid != 0 && st.st_uid != me) {
      problem = fmt::format("is owned by uid {}", st.st_uid);
    } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      problem = fmt::format("is writable by group or others (mode {:04o})", st.st_mode & 07777);
    }
    if (!problem.empty()) {
      throw Error("verify: {} {}, so it cannot vouch for which files verify reads; fix its owner "
                  "and mode, or pass --trust-descriptor to read the files the descriptor names",
                  path, problem);
    }
  };
  check(layout_path, false);
  check(fs::absolute(layout_path).parent_path().string(), true);
}

constexpr uint64_t kSector = 512;

// Reads a small input file (layout, qemu.json, expect file) without blocking on a FIFO or
// reading a device, and never more than 64 MiB.
std::string read_text(const std::string& path, const std::string& what) {
  InputFile file = open_input_file(path, fmt::format("verify: {}", what));
  const auto size = static_cast<uint64_t>(file.st.st_size);
  if (size > (64u << 20)) throw Error("verify: {} {}: {} bytes is too large", what, path, size);
  std::string text(size, '\0');
  pread_exact(file.fd.get(), text.data(), text.size(), 0, path);
  return text;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string where(uint64_t disk_offset) {
  return fmt::format("disk offset {} (LBA {})", disk_offset, disk_offset / kSector);
}

// Random access to the virtual disk through the extent map, for the small structural reads
// (superblocks, GPT): pread on each extent file, zeros past a file's end as QEMU presents them.
class VirtualDisk {
 public:
  explicit VirtualDisk(const vmdk::ExtentMap& map) : map_(map) {}

  std::string read(uint64_t offset, uint64_t length) {
    std::string out(length, '\0');
    uint64_t done = 0;
    while (done < length) {
      auto location = map_.find(offset + done);
      if (!location) break;  // past the end of the disk: zeros
      uint64_t step = std::min(length - done, location->bytes_left);
      int fd = fd_for(location->extent->path);
      pread_full(fd, out.data() + done, step, location->file_offset, location->extent->path);
      done += step;
    }
    return out;
  }

  int fd_for(const std::string& path) { return file_for(path).fd.get(); }

  // Every extent file is opened once, without blocking, and only if it is a regular file.
  const InputFile& file_for(const std::string& path) {
    auto found = files_.find(path);
    if (found != files_.end()) return found->second;
    return files_.emplace(path, open_input_file(path, "verify: extent file")).first->second;
  }

  // The file and offset backing `offset`, and how many bytes from there map contiguously into
  // that same file (following extent splits).
  struct Run {
    std::string path;
    uint64_t file_offset = 0;
    uint64_t length = 0;
  };
  std::optional<Run> contiguous_run(uint64_t offset, uint64_t limit) const {
    auto location = map_.find(offset);
    if (!location) return std::nullopt;
    Run run{location->extent->path, location->file_offset, std::min(location->bytes_left, limit)};
    for (size_t i = location->index + 1; i < map_.extents().size() && run.length < limit; ++i) {
      const auto& next = map_.extents()[i];
      if (next.path != run.path || next.file_offset != run.file_offset + run.length) break;
      run.length = std::min(limit, run.length + next.length);
    }
    return run;
  }

  // The ranges of files that present disk bytes [offset, offset + length).
  std::vector<ReadSegment> segments(uint64_t offset, uint64_t length) const {
    std::vector<ReadSegment> out;
    uint64_t done = 0;
    while (done < length) {
      auto location = map_.find(offset + done);
      if (!location) break;
      uint64_t step = std::min(length - done, location->bytes_left);
      out.push_back({location->extent->path, location->file_offset, step});
      done += step;
    }
    return out;
  }

 private:
  const vmdk::ExtentMap& map_;
  std::map<std::string, InputFile> files_;
};

using ExpectedLayer = LayoutLayer;

// A raw GPT entry as it sits on the disk, without trusting any CRC, so a damaged entry can be
// pinned to its partition (and so to its layer).
struct RawEntry {
  gpt::Guid type{};
  gpt::Guid unique{};
  uint64_t first_lba = 0;
  uint64_t last_lba = 0;
  bool used() const { return type != gpt::Guid{}; }
  bool operator==(const RawEntry&) const = default;
};

uint64_t le64(const char* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t le32(const char* p) {
  uint32_t v = 0;
  std::memcpy(&v, p, 4);
  return v;
}

struct RawGpt {
  bool present = false;
  uint64_t entries_lba = 0;
  uint32_t entry_count = 0;
  uint32_t entry_size = 0;
  uint64_t alternate_lba = 0;
  std::vector<RawEntry> entries;
};

RawGpt read_raw_gpt(VirtualDisk& disk, uint64_t header_lba) {
  RawGpt gpt;
  std::string header = disk.read(header_lba * kSector, kSector);
  if (header.compare(0, 8, "EFI PART") != 0) return gpt;
  gpt.present = true;
  gpt.alternate_lba = le64(header.data() + 32);
  gpt.entries_lba = le64(header.data() + 72);
  gpt.entry_count = le32(header.data() + 80);
  gpt.entry_size = le32(header.data() + 84);
  if (gpt.entry_size < 128 || gpt.entry_count > 4096) return gpt;  // the strict reader reports it
  std::string array = disk.read(gpt.entries_lba * kSector, uint64_t{gpt.entry_count} * gpt.entry_size);
  for (uint32_t i = 0; i < gpt.entry_count; ++i) {
    const char* e = array.data() + uint64_t{i} * gpt.entry_size;
    RawEntry entry;
    entry.type = gpt::guid_from_disk(reinterpret_cast<const uint8_t*>(e));
    entry.unique = gpt::guid_from_disk(reinterpret_cast<const uint8_t*>(e + 16));
    entry.first_lba = le64(e + 32);
    entry.last_lba = le64(e + 40);
    gpt.entries.push_back(entry);
  }
  return gpt;
}

// Copies the GPT areas of the virtual disk into a sparse memfd of the same size, so the host
// library's strict GPT reader (which wants a raw image fd) validates exactly the guest's view.
UniqueFd gpt_image(VirtualDisk& disk, uint64_t disk_bytes) {
  UniqueFd fd(::memfd_create("evmdk-verify-gpt", MFD_CLOEXEC));
  if (!fd) throw_errno("verify: memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(disk_bytes)) != 0) throw_errno("verify: ftruncate memfd");
  uint64_t area = std::min<uint64_t>(disk_bytes, 1u << 20);
  std::string head = disk.read(0, area);
  write_all(fd.get(), head.data(), head.size(), "GPT head copy", 0);
  std::string tail = disk.read(disk_bytes - area, area);
  write_all(fd.get(), tail.data(), tail.size(), "GPT tail copy", static_cast<int64_t>(disk_bytes - area));
  return fd;
}

// A zero-check stream with a label for its messages.
struct GapStream {
  uint64_t disk_offset = 0;
  std::string label;
  ZeroCheck check;
};

// How `file` differs from the identity layout.json recorded for `expected`, or nullopt.
std::optional<std::string> identity_change(const InputFile& file, const LayoutLayer& expected) {
  const FileIdentity& was = *expected.identity;
  FileIdentity now;
  if (expected.erofs) {
    try {
      ErofsInfo info = probe_layer(expected.path, ProbeOptions{.check_blkid = false});
      now = {info.device, info.inode, info.file_size, to_hex(info.identity)};
    } catch (const Error& error) {
      return fmt::format("it no longer probes as EROFS: {}", error.what());
    }
  } else {
    now = blob_identity(file, expected.path);
  }
  if (now.device != was.device || now.inode != was.inode) {
    return fmt::format("device:inode {}:{}, layout.json says {}:{}", now.device, now.inode,
                       was.device, was.inode);
  }
  if (now.size != was.size) return fmt::format("{} bytes, layout.json says {}", now.size, was.size);
  if (now.head_sha256 != was.head_sha256) {
    return fmt::format("its superblock digest is {}, layout.json says {}", now.head_sha256,
                       was.head_sha256);
  }
  return std::nullopt;
}

}  // namespace

std::string VerifiedLayer::name() const { return fmt::format("layer {} ({})", index, path); }

nlohmann::json VerifyReport::to_json() const {
  nlohmann::json layer_list = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json j{{"index", l.index}, {"path", l.path}, {"disk_offset", l.disk_offset},
                     {"length", l.length}, {"erofs_uuid", l.erofs_uuid}, {"ok", l.ok}};
    if (l.partition) {
      j["partition"] = *l.partition;
      j["partuuid"] = l.partuuid;
    }
    if (!l.sha256.empty()) j["sha256"] = l.sha256;
    if (!l.expected_sha256.empty()) j["expected_sha256"] = l.expected_sha256;
    if (!l.verity.empty()) j["verity"] = l.verity;
    layer_list.push_back(std::move(j));
  }
  return nlohmann::json{{"ok", ok()},
                        {"descriptor", descriptor},
                        {"layout", layout},
                        {"mode", mode},
                        {"disk_bytes", disk_bytes},
                        {"bytes_read", stats.bytes},
                        {"direct_bytes", stats.direct_bytes},
                        {"seconds", seconds},
                        {"layers", layer_list},
                        {"problems", problems}};
}

std::vector<ExpectedDigest> parse_expected_digests(const std::string& text, const std::string& name) {
  std::vector<ExpectedDigest> out;
  auto add = [&](const std::string& key, const std::string& hex) {
    auto digest = sha256_from_hex(hex);
    if (!digest) throw Error("verify: expect file {}: '{}' for {} is not a SHA-256 hex digest", name, hex, key);
    out.push_back({key, *digest});
  };
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& error) {
      throw Error("verify: expect file {} is not valid JSON: {}", name, error.what());
    }
    const nlohmann::json& object = json.contains("layers") ? json.at("layers") : json;
    if (!object.is_object()) throw Error("verify: expect file {}: expected an object of digests", name);
    for (const auto& [key, value] : object.items()) {
      if (!value.is_string()) throw Error("verify: expect file {}: digest for {} is not a string", name, key);
      add(key, value.get<std::string>());
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    size_t number = 0;
    while (std::getline(lines, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      // sha256sum: 64 hex digits, a space, then ' ' (text) or '*' (binary), then the name.
      if (line.size() < 67 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
        throw Error("verify: expect file {} line {}: expected '<sha256>  <layer>' or JSON", name, number);
      }
      add(line.substr(66), line.substr(0, 64));
    }
  }
  if (out.empty()) throw Error("verify: expect file {} lists no digests", name);
  return out;
}

std::string render_expected_digests(const VerifyReport& report) {
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& layer : report.layers) {
    if (!layer.sha256.empty()) layers[layer.path] = layer.sha256;
  }
  return nlohmann::json{{"algorithm", "sha256"}, {"layers", layers}}.dump(2) + "\n";
}

// A descriptor written with --fdset names /dev/fdset/N, which only QEMU can open (the runtime
// passes each file with add-fd). The qemu.json compose wrote next to it says which file goes
// into which fdset: read those files instead.
static void resolve_fdsets(vmdk::QemuReading& reading, const std::string& descriptor) {
  constexpr std::string_view kFdset = "/dev/fdset/";
  std::map<std::string, std::string> file_of;  // "/dev/fdset/N" -> path
  bool loaded = false;
  std::string qemu_json = (fs::path(descriptor).parent_path() / "qemu.json").string();
  for (auto& extent : reading.extents) {
    if (extent.resolved_path.rfind(kFdset, 0) != 0) continue;
    if (!loaded) {
      loaded = true;
      if (!fs::exists(qemu_json)) {
        throw Error("extent line {} names {} (fd passing) and there is no {} saying which file "
                    "that fdset holds",
                    extent.last_line, extent.resolved_path, qemu_json);
      }
      try {
        auto json = nlohmann::json::parse(read_text(qemu_json, "qemu.json"));
        for (const auto& fdset : json.at("fdsets")) {
          file_of[fmt::format("{}{}", kFdset, fdset.at("fdset-id").get<uint64_t>())] =
              fdset.at("path").get<std::string>();
        }
      } catch (const nlohmann::json::exception& error) {
        throw Error("{}: cannot read its fdsets: {}", qemu_json, error.what());
      }
    }
    auto found = file_of.find(extent.resolved_path);
    if (found == file_of.end()) {
      throw Error("extent line {} names {}, which {} does not list", extent.last_line,
                  extent.resolved_path, qemu_json);
    }
    extent.resolved_path = found->second;
  }
}

// The layer's dm-verity superblock as the guest finds it (on the disk, where the options
// point), then the tree recomputed from the layer file's data (the descriptor was checked to map
// that file) against the root hash the guest is given and the tree stored in the file.
template <typename Problem>
void check_layer_verity(VirtualDisk& disk, const ExpectedLayer& expected, VerifiedLayer& layer,
                        unsigned threads, Problem&& problem) {
  layer.verity = "failed";
  const bool ok_so_far = layer.ok;
  layer.ok = false;  // until the checks below pass
  std::string bytes = disk.read(expected.verity_hash_disk_offset, kVeritySuperblockSize);
  VeritySuperblock sb;
  try {
    sb = parse_verity_superblock(
        std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), layer.name());
  } catch (const std::exception& error) {
    problem(fmt::format("{}: no dm-verity superblock at {}: {}", layer.name(),
                        where(expected.verity_hash_disk_offset), error.what()));
    return;
  }
  VerityTreeCheck check;
  try {
    check = verity_check_tree(expected.path, expected.verity_hash_offset, sb, threads);
  } catch (const std::exception& error) {
    problem(fmt::format("{}: dm-verity superblock at {}: {}", layer.name(),
                        where(expected.verity_hash_disk_offset), error.what()));
    return;
  }
  if (check.root_hash != expected.verity_root_hash) {
    problem(fmt::format("{}: dm-verity: its data hashes to root {}, but the guest is given {}; "
                        "reads of the changed blocks will fail with EIO",
                        layer.name(), check.root_hash, expected.verity_root_hash));
    return;
  }
  if (check.first_bad_tree_byte) {
    problem(fmt::format("{}: dm-verity: the stored hash tree differs from its data at byte {} "
                        "of the file; reads that need that tree block will fail with EIO",
                        layer.name(), *check.first_bad_tree_byte));
    return;
  }
  layer.verity = "verified";
  layer.ok = ok_so_far;
}

VerifyReport verify_disk(const VerifyOptions& options) {
  auto started = std::chrono::steady_clock::now();
  VerifyReport report;

  // Resolve what to read.
  std::string layout_path;
  if (fs::is_directory(options.target)) {
    report.descriptor = (fs::path(options.target) / "disk.vmdk").string();
    layout_path = (fs::path(options.target) / "layout.json").string();
    if (!fs::exists(layout_path)) throw Error("verify: {} has no layout.json (not a compose output directory?)", options.target);
  } else {
    if (!fs::exists(options.target)) throw Error("verify: {} does not exist", options.target);
    report.descriptor = options.target;
    fs::path sibling = fs::path(options.target).parent_path() / "layout.json";
    if (fs::exists(sibling)) layout_path = sibling.string();
  }
  std::optional<Layout> layout;
  if (!layout_path.empty()) {
    try {
      layout = read_layout(layout_path);
    } catch (const Error& error) {
      throw Error("verify: {}", error.what());
    }
    report.layout = layout_path;
    if (!options.trust_descriptor) refuse_untrusted_layout(layout_path);
  } else if (!options.trust_descriptor) {
    // Without compose's own record, the descriptor alone would decide which files root reads
    // (and digests): refuse rather than be a file-reading oracle.
    throw Error("verify: {} has no {} beside it, so nothing says which files it may read; "
                "verify the compose output directory, or pass --trust-descriptor to read the "
                "files this descriptor names", options.target, "layout.json");
  }

  vmdk::ExtentMap map;
  if (layout && layout->format == "raw") {
    // Raw mode: the disk is the layer file itself; there is no descriptor.
    vmdk::Descriptor raw;
    raw.extents.push_back({layout->disk, layout->disk_sectors, 0});
    map = vmdk::ExtentMap::from_descriptor(raw);
    report.descriptor.clear();
  } else {
    if (!fs::exists(report.descriptor)) throw Error("verify: descriptor {} does not exist", report.descriptor);
    try {
      auto reading = vmdk::read_as_qemu(vmdk::read_descriptor_bytes(report.descriptor), report.descriptor);
      resolve_fdsets(reading, report.descriptor);
      map = vmdk::ExtentMap::from_qemu_reading(reading);
    } catch (const std::exception& error) {
      throw Error("verify: {}", with_context(report.descriptor, error));
    }
  }
  report.disk_bytes = map.virtual_size();
  if (layout) {
    // Read only the files compose listed: an edited descriptor cannot point verify elsewhere.
    std::set<std::string> listed;
    if (layout->format == "raw") listed.insert(layout->disk);
    for (const auto& l : layout->layers) listed.insert(l.path);
    for (const auto& e : layout->extents) listed.insert(e.path);
    for (const auto& extent : map.extents()) {
      if (!listed.count(extent.path)) {
        throw Error("verify: {} line {} names {}, which {} does not list; refusing to read it",
                    report.descriptor, extent.line, extent.path, layout_path);
      }
    }
  }

  VirtualDisk disk(map);
  auto problem = [&](std::string message) { report.problems.push_back(std::move(message)); };

  // The descriptor must still map what compose wrote (an edited or swapped extent line).
  if (layout) {
    if (layout->disk_sectors != 0 && layout->disk_sectors * kSector != report.disk_bytes) {
      problem(fmt::format("disk: the descriptor presents {} bytes, layout.json says {}", report.disk_bytes,
                          layout->disk_sectors * kSector));
    }
    for (const auto& extent : layout->extents) {
      uint64_t offset = extent.first_lba * kSector;
      auto run = disk.contiguous_run(offset, extent.sectors * kSector);
      std::string owner = extent.role;
      for (const auto& l : layout->layers) {
        if (offset >= l.first_lba * kSector && offset < (l.first_lba + l.sectors) * kSector && extent.role != "zero") {
          owner = fmt::format("layer {} ({})", l.index, l.path);
        }
      }
      if (!run || run->path != extent.path || run->file_offset != extent.file_offset_sectors * kSector ||
          run->length != extent.sectors * kSector) {
        problem(fmt::format("{} at {}: the descriptor maps {} at file offset {} ({} bytes), layout.json says {} at {} ({} bytes)",
                            owner, where(offset), run ? run->path : "nothing", run ? run->file_offset : 0,
                            run ? run->length : 0, extent.path, extent.file_offset_sectors * kSector,
                            extent.sectors * kSector));
      }
    }
  }

  // GPT: strict validation (CRCs, backup) by the host library, then entry-by-entry against
  // layout.json and between the two copies, so damage is pinned to a partition and its layer.
  RawGpt primary = read_raw_gpt(disk, 1);
  bool gpt_expected = layout ? layout->mode == "gpt" : primary.present;
  if (layout) report.mode = layout->mode;
  else report.mode = primary.present ? "gpt" : "flat";
  std::optional<RawGpt> backup;
  if (gpt_expected) {
    if (!primary.present) {
      problem(fmt::format("GPT: no primary header (\"EFI PART\") at {}", where(kSector)));
    } else {
      backup = read_raw_gpt(disk, report.disk_bytes / kSector - 1);
      if (!backup->present) {
        problem(fmt::format("GPT: no backup header at {}", where(report.disk_bytes - kSector)));
      }
      try {
        UniqueFd image = gpt_image(disk, report.disk_bytes);
        gpt::Table table = gpt::read_table(image.get(), "the disk's GPT", true);
        if (layout && !layout->disk_guid.empty() && lower(gpt::format_guid(table.disk_guid)) != lower(layout->disk_guid)) {
          problem(fmt::format("GPT: disk GUID {} differs from layout.json's {}", gpt::format_guid(table.disk_guid),
                              layout->disk_guid));
        }
      } catch (const Error& error) {
        problem(fmt::format("GPT at {}: {}", where(0), error.what()));
      }
    }
  }

  // The layers to check.
  struct Work {
    VerifiedLayer layer;
    std::optional<ExpectedLayer> expected;
    uint64_t region_end = 0;  // end of the layer's disk area (partition end) for zero padding
  };
  std::vector<Work> work;
  if (layout) {
    for (const auto& l : layout->layers) {
      Work w;
      w.layer.index = l.index;
      w.layer.path = l.path;
      w.layer.disk_offset = l.first_lba * kSector;
      w.layer.partition = l.partition;
      w.expected = l;
      w.region_end = (l.first_lba + l.sectors) * kSector;
      work.push_back(std::move(w));
    }
  } else if (primary.present) {
    for (size_t i = 0; i < primary.entries.size(); ++i) {
      const RawEntry& e = primary.entries[i];
      if (!e.used()) continue;
      Work w;
      w.layer.index = i;
      w.layer.disk_offset = e.first_lba * kSector;
      w.layer.partition = static_cast<uint32_t>(i + 1);
      w.region_end = (e.last_lba + 1) * kSector;
      work.push_back(std::move(w));
    }
  } else {
    Work w;
    w.layer.index = 0;
    w.region_end = report.disk_bytes;
    work.push_back(std::move(w));
  }

  for (auto& w : work) {
    VerifiedLayer& layer = w.layer;
    auto fail = [&](const std::string& message) {
      layer.ok = false;
      problem(message);
    };
    uint64_t region = w.region_end > layer.disk_offset ? w.region_end - layer.disk_offset : 0;
    auto run = disk.contiguous_run(layer.disk_offset, region);
    if (!run) {
      if (layer.path.empty()) layer.path = "?";
      fail(fmt::format("{} at {}: outside the disk ({} bytes)", layer.name(), where(layer.disk_offset), report.disk_bytes));
      continue;
    }
    if (layer.path.empty()) layer.path = run->path;
    // Digest length: the layer file as mapped (== `sha256sum layer.erofs` for a whole file).
    uint64_t file_size = static_cast<uint64_t>(disk.file_for(run->path).st.st_size);
    uint64_t mapped_file = run->file_offset < file_size ? std::min(run->length, file_size - run->file_offset) : 0;
    layer.length = w.expected && w.expected->file_size != 0 ? std::min(w.expected->file_size, region) : mapped_file;

    if (w.expected && run->path != w.expected->path) {
      fail(fmt::format("{} at {}: the disk reads {} there", layer.name(), where(layer.disk_offset), run->path));
    }
    // The file must still be the one compose read (not replaced, retargeted or rewritten).
    if (w.expected && w.expected->identity) {
      if (auto changed = identity_change(disk.file_for(w.expected->path), *w.expected)) {
        fail(fmt::format("{}: the file is no longer the one composed: {}", layer.name(), *changed));
      }
    }
    if (w.expected && w.expected->file_size != 0 && file_size != w.expected->file_size && run->path == w.expected->path) {
      fail(fmt::format("{} at {}: file is {} bytes, layout.json says {}", layer.name(), where(layer.disk_offset),
                       file_size, w.expected->file_size));
    }

    // GPT entry for this layer's partition, primary and backup, against layout.json.
    if (gpt_expected && primary.present && layer.partition) {
      size_t slot = *layer.partition - 1;
      if (slot >= primary.entries.size() || !primary.entries[slot].used()) {
        fail(fmt::format("{}: GPT entry for partition {} is missing or empty", layer.name(), *layer.partition));
      } else {
        const RawEntry& entry = primary.entries[slot];
        layer.partuuid = lower(gpt::format_guid(entry.unique));
        if (w.expected) {
          if (entry.first_lba != w.expected->partition_first_lba ||
              entry.last_lba != w.expected->partition_last_lba) {
            fail(fmt::format("{}: GPT partition {} spans LBA {}..{}, layout.json says {}..{}", layer.name(), *layer.partition,
                             entry.first_lba, entry.last_lba, w.expected->partition_first_lba,
                             w.expected->partition_last_lba));
          }
          if (!w.expected->partuuid.empty() && layer.partuuid != lower(w.expected->partuuid)) {
            fail(fmt::format("{}: GPT partition {} has PARTUUID {}, layout.json says {}", layer.name(), *layer.partition,
                             layer.partuuid, w.expected->partuuid));
          }
        }
        if (backup && backup->present && (slot >= backup->entries.size() || !(backup->entries[slot] == entry))) {
          fail(fmt::format("{}: primary and backup GPT entries for partition {} differ", layer.name(), *layer.partition));
        }
      }
    }

    // The superblock where the guest finds it.
    if (!w.expected || w.expected->erofs) {
      try {
        int fd = disk.fd_for(run->path);
        ErofsInfo info = probe_image_at(fd, run->file_offset, run->length, layer.name());
        layer.erofs_uuid = info.uuid_string;
        if (w.expected && !w.expected->erofs_uuid.empty() && lower(info.uuid_string) != lower(w.expected->erofs_uuid)) {
          fail(fmt::format("{} at {}: EROFS UUID {}, layout.json says {} (a different layer?)", layer.name(),
                           where(layer.disk_offset), info.uuid_string, w.expected->erofs_uuid));
        }
        if (w.expected && w.expected->fs_size != 0 && info.fs_size != w.expected->fs_size) {
          fail(fmt::format("{} at {}: EROFS filesystem is {} bytes, layout.json says {}", layer.name(),
                           where(layer.disk_offset), info.fs_size, w.expected->fs_size));
        }
      } catch (const Error& error) {
        // The probe names the image itself; keep one name per message.
        std::string message = error.what();
        if (message.rfind(layer.name() + ": ", 0) == 0) message.erase(0, layer.name().size() + 2);
        fail(fmt::format("{} at {}: {}", layer.name(), where(layer.disk_offset + kSuperblockOffset), message));
      }
    }
  }

  // Expected digests.
  std::vector<ExpectedDigest> expected;
  if (options.expect_path) expected = parse_expected_digests(read_text(*options.expect_path, "expect file"), *options.expect_path);
  bool digest = options.digest || options.expect_path.has_value();
  std::vector<std::optional<Sha256Digest>> expected_for(work.size());
  for (const auto& e : expected) {
    std::vector<size_t> matches;
    for (size_t i = 0; i < work.size(); ++i) {
      const auto& l = work[i].layer;
      if (e.key == std::to_string(l.index) || e.key == l.path) matches.push_back(i);
    }
    if (matches.empty()) {
      for (size_t i = 0; i < work.size(); ++i) {
        if (fs::path(work[i].layer.path).filename() == fs::path(e.key).filename()) matches.push_back(i);
      }
    }
    if (matches.size() != 1) {
      problem(fmt::format("expect file {}: '{}' {}", *options.expect_path, e.key,
                          matches.empty() ? "names no layer of this disk" : "matches more than one layer"));
      continue;
    }
    expected_for[matches[0]] = e.digest;
    work[matches[0]].layer.expected_sha256 = to_hex(e.digest);
  }

  // Streams: each layer's bytes, then every other byte of the disk (zeros except GPT areas).
  std::vector<ReadStream> streams;
  std::vector<StreamSink*> sinks;
  std::vector<std::unique_ptr<Sha256>> digests(work.size());
  DiscardSink discard;
  std::vector<std::unique_ptr<GapStream>> gaps;
  std::vector<std::pair<uint64_t, uint64_t>> covered;  // [begin, end) of layer bytes
  for (size_t i = 0; i < work.size(); ++i) {
    const auto& l = work[i].layer;
    streams.push_back({disk.segments(l.disk_offset, l.length)});
    if (digest) {
      digests[i] = std::make_unique<Sha256>();
      sinks.push_back(digests[i].get());
    } else {
      sinks.push_back(&discard);
    }
    covered.emplace_back(l.disk_offset, l.disk_offset + l.length);
  }
  // GPT structures are checked above; they are read but not zero-checked.
  std::vector<std::pair<uint64_t, uint64_t>> structures;
  if (primary.present) {
    uint64_t entry_bytes = uint64_t{primary.entry_count} * std::max<uint32_t>(primary.entry_size, 128);
    structures.emplace_back(0, primary.entries_lba * kSector + entry_bytes);
    if (backup && backup->present) {
      structures.emplace_back(backup->entries_lba * kSector, report.disk_bytes);
    } else {
      structures.emplace_back(report.disk_bytes - kSector - entry_bytes, report.disk_bytes);
    }
  }
  // Flat mode puts each protected layer's dm-verity hash area after the last device: not a
  // zero gap. Its start must hold the verity superblock the guest will load.
  if (layout) {
    for (const auto& extent : layout->extents) {
      if (extent.role != "verity") continue;
      uint64_t offset = extent.first_lba * kSector;
      covered.emplace_back(offset, offset + extent.sectors * kSector);
      std::string bytes = disk.read(offset, kVeritySuperblockSize);
      try {
        (void)parse_verity_superblock(
            std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), extent.path);
      } catch (const std::exception& error) {
        problem(fmt::format("dm-verity hash area of {} at {}: {}", extent.path, where(offset),
                            error.what()));
      }
    }
  }
  std::sort(covered.begin(), covered.end());
  auto label_for = [&](uint64_t offset) {
    const VerifiedLayer* before = nullptr;
    for (const auto& w : work) {
      if (offset >= w.layer.disk_offset && offset < w.region_end) return fmt::format("{} padding", w.layer.name());
      if (w.layer.disk_offset <= offset && (before == nullptr || w.layer.disk_offset > before->disk_offset)) {
        before = &w.layer;
      }
    }
    return before != nullptr ? fmt::format("gap after {}", before->name()) : std::string("gap before the first layer");
  };
  auto add_region = [&](uint64_t begin, uint64_t end) {
    // Split [begin, end) around GPT structures.
    uint64_t at = begin;
    while (at < end) {
      uint64_t next = end;
      bool structural = false;
      for (const auto& [s, e] : structures) {
        if (at >= s && at < e) {
          structural = true;
          next = std::min(end, e);
          break;
        }
        if (s > at && s < next) next = s;
      }
      streams.push_back({disk.segments(at, next - at)});
      if (structural) {
        sinks.push_back(&discard);
      } else {
        gaps.push_back(std::make_unique<GapStream>());
        gaps.back()->disk_offset = at;
        gaps.back()->label = label_for(at);
        sinks.push_back(&gaps.back()->check);
      }
      at = next;
    }
  };
  uint64_t cursor = 0;
  for (const auto& [begin, end] : covered) {
    if (begin > cursor) add_region(cursor, begin);
    cursor = std::max(cursor, end);
  }
  if (cursor < report.disk_bytes) add_region(cursor, report.disk_bytes);
  std::vector<size_t> gap_stream_of;  // stream index -> gap index
  {
    size_t gap = 0;
    gap_stream_of.assign(streams.size(), SIZE_MAX);
    for (size_t s = work.size(); s < streams.size(); ++s) {
      if (sinks[s] != &discard) gap_stream_of[s] = gap++;
    }
  }

  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsigned threads = digest ? (options.threads != 0 ? options.threads : cores) : 0;
  threads = std::min<unsigned>(threads, static_cast<unsigned>(std::max<size_t>(work.size(), 1)));
  ReaderOptions reader_options;
  reader_options.chunk_size = options.chunk_size;
  reader_options.queue_depth = options.queue_depth;
  reader_options.direct = options.direct;
  reader_options.parallel_streams = std::max(1u, threads);
  reader_options.consumer_buffers = std::max(4u, 3 * std::max(1u, threads));
  UringReader reader(reader_options);
  uint64_t total = 0;
  for (const auto& s : streams) total += s.length();
  ProgressBar progress = options.progress ? ProgressBar::for_stderr("verify", total)
                                          : ProgressBar("verify", total, STDERR_FILENO, false);
  {
    OrderedStreamPool pool(sinks, threads);
    report.stats = reader.run(
        streams, [&](const Chunk& chunk, ChunkLease lease) { pool.push(chunk, std::move(lease)); },
        [&](uint64_t done) { progress.update(done); });
    pool.finish();
  }
  progress.finish();

  for (size_t s = 0; s < streams.size(); ++s) {
    if (gap_stream_of[s] == SIZE_MAX) continue;
    const auto& gap = *gaps[gap_stream_of[s]];
    if (auto at = gap.check.first_nonzero()) {
      problem(fmt::format("{} at {}: non-zero byte where the guest must read zeros", gap.label, where(gap.disk_offset + *at)));
    }
  }
  for (size_t i = 0; i < work.size(); ++i) {
    VerifiedLayer& layer = work[i].layer;
    if (digest) layer.sha256 = to_hex(digests[i]->finish());
    if (expected_for[i] && layer.sha256 != to_hex(*expected_for[i])) {
      layer.ok = false;
      problem(fmt::format("{} at {}: SHA-256 of its {} bytes is {}, expected {}", layer.name(), where(layer.disk_offset),
                          layer.length, layer.sha256, to_hex(*expected_for[i])));
    }
    if (options.check_verity && work[i].expected && !work[i].expected->verity_root_hash.empty()) {
      check_layer_verity(disk, *work[i].expected, layer, options.threads, problem);
    }
    report.layers.push_back(std::move(layer));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace evmdk::host
