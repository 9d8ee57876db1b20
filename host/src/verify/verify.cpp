#include "evmdk/host/verify/verify.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "evmdk/checked_math.h"
#include "evmdk/error.h"
#include "evmdk/host/compose/gpt.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/host/erofs/probe.h"
#include "evmdk/host/verify/verify_progress.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/input_file.h"
#include "evmdk/unique_fd.h"
#include "evmdk/vmdk/descriptor.h"
#include "evmdk/vmdk/extent_map.h"
#include "layer_checks.h"
#include "virtual_disk.h"

namespace evmdk::host {

namespace fs = std::filesystem;
using namespace verify_detail;

namespace {

using ExpectedLayer = LayoutLayer;

// A zero-check stream with a label for its messages.
struct GapStream {
  uint64_t disk_offset = 0;
  std::string label;
  ZeroCheck check;
};

// One verify run, phase by phase: resolve what to read, the descriptor against layout.json,
// the GPT, each layer's structure, the expect file, then one pass over every byte of the disk
// (layers digested, gaps zero-checked) and the per-layer results.
class DiskVerifier {
 public:
  explicit DiskVerifier(const VerifyOptions& options) : options_(options) {}

  VerifyReport run() {
    auto started = std::chrono::steady_clock::now();
    resolve_target();
    load_extent_map();
    check_descriptor_against_layout();
    check_gpt();
    plan_layers();
    for (auto& w : work_) check_layer(w);
    match_expected_digests();
    plan_reads();
    read_all();
    finish();
    report_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return std::move(report_);
  }

 private:
  struct LayerWork {
    VerifiedLayer layer;
    std::optional<ExpectedLayer> expected;
    uint64_t region_end = 0;  // end of the layer's disk area (partition end) for zero padding
  };
  using Range = std::pair<uint64_t, uint64_t>;  // [begin, end) on the disk

  void problem(std::string message) { report_.problems.push_back(std::move(message)); }

  // The descriptor and layout.json to read; refuses a layout anybody else could have written
  // and, unless trusted, a descriptor without one.
  void resolve_target() {
    const bool directory = fs::is_directory(options_.target);
    if (directory) {
      layout_path_ = (fs::path(options_.target) / kLayoutName).string();
      if (!fs::exists(layout_path_)) {
        throw Error("verify: {} has no layout.json (not a compose output directory?)",
                    options_.target);
      }
    } else {
      if (!fs::exists(options_.target)) throw Error("verify: {} does not exist", options_.target);
      report_.descriptor = options_.target;
      fs::path sibling = fs::path(options_.target).parent_path() / kLayoutName;
      if (fs::exists(sibling)) layout_path_ = sibling.string();
    }
    if (!layout_path_.empty()) {
      try {
        layout_ = read_layout(layout_path_);
      } catch (const Error& error) {
        throw_with_context(error, "verify");
      }
      report_.layout = layout_path_;
      if (!options_.trust_descriptor) refuse_untrusted_layout(layout_path_);
      raw_image_ = is_raw_image(*layout_);
    } else if (!options_.trust_descriptor) {
      // Without compose's own record, the descriptor alone would decide which files root reads
      // (and digests): refuse rather than be a file-reading oracle.
      throw Error(
          "verify: {} has no {} beside it, so nothing says which files it may read; "
          "verify the compose output directory, or pass --trust-descriptor to read the "
          "files this descriptor names",
          options_.target, kLayoutName);
    }
    if (directory) {
      report_.descriptor =
          (fs::path(options_.target) / descriptor_name(*layout_, layout_path_)).string();
    }
    // The image is named absolute, as compose names every file (the extent map wants it so).
    if (raw_image_) {
      report_.image = fs::absolute(std::exchange(report_.descriptor, "")).lexically_normal();
      if (!directory && fs::path(report_.image).filename() != fs::path(layout_->disk).filename()) {
        throw Error(
            "verify: {} describes the raw image {}, not {}; verify the directory or the "
            "image",
            layout_path_, layout_->disk, options_.target);
      }
    }
  }

  // The extent map (raw mode: the layer file itself), and only files compose listed in it.
  void load_extent_map() {
    if (layout_ && layout_->mode == "raw" && !raw_image_) {
      // Raw mode: the disk is the layer file itself; there is no descriptor.
      vmdk::Descriptor raw;
      raw.extents.push_back({layout_->disk, layout_->disk_sectors, 0});
      map_ = vmdk::ExtentMap::from_descriptor(raw);
      report_.descriptor.clear();
    } else if (raw_image_) {
      load_raw_image();
    } else {
      map_ = read_descriptor_map(report_.descriptor);
    }
    report_.disk_bytes = map_.virtual_size();
    if (!layout_ || raw_image_) return;
    // Read only the files compose listed: an edited descriptor cannot point verify elsewhere.
    std::set<std::string> listed;
    if (layout_->mode == "raw") listed.insert(layout_->disk);
    for (const auto& l : layout_->layers) listed.insert(l.path);
    for (const auto& e : layout_->extents) listed.insert(e.path);
    for (const auto& extent : map_.extents()) {
      if (!listed.count(extent.path)) {
        throw Error("verify: {} line {} names {}, which {} does not list; refusing to read it",
                    report_.descriptor, extent.line, extent.path, layout_path_);
      }
    }
  }

  // A raw composed disk is the image itself, as the guest sees it: opened like any input (no
  // symlink, a regular file), its size the disk's. Its bytes are checked against the layer
  // files as they are read (plan_reads).
  void load_raw_image() {
    InputFile file =
        open_input_file(report_.image, "verify: raw image", InputKind::RegularFile, false);
    const auto size = static_cast<uint64_t>(file.st.st_size);
    auto expected = mul_checked<uint64_t>(layout_->disk_sectors, kSector);
    if (!expected || size != *expected) {
      problem(
          fmt::format("disk: {} is {} bytes, but layout.json's disk_sectors {} make {} bytes "
                      "({} after compose)",
                      report_.image, size, layout_->disk_sectors,
                      expected ? std::to_string(*expected) : "too many",
                      expected && size < *expected ? "truncated" : "extended"));
    }
    if (size < kSector) throw Error("verify: {} is {} bytes, not a disk", report_.image, size);
    disk_.adopt(report_.image, std::move(file));
    image_ = RawImageRef{report_.image, disk_.fd_for(report_.image)};
    vmdk::Descriptor raw;
    raw.extents.push_back({report_.image, size / kSector, 0});
    map_ = vmdk::ExtentMap::from_descriptor(raw);
  }

  // The descriptor must still map what compose wrote (an edited or swapped extent line).
  void check_descriptor_against_layout() {
    if (!layout_ || raw_image_) return;
    if (layout_->disk_sectors != 0 && layout_->disk_sectors * kSector != report_.disk_bytes) {
      problem(fmt::format("disk: the descriptor presents {} bytes, layout.json says {}",
                          report_.disk_bytes, layout_->disk_sectors * kSector));
    }
    for (const auto& extent : layout_->extents) {
      uint64_t offset = extent.first_lba * kSector;
      auto run = disk_.contiguous_run(offset, extent.sectors * kSector);
      std::string owner = extent.role;
      for (const auto& l : layout_->layers) {
        if (offset >= l.first_lba * kSector && offset < (l.first_lba + l.sectors) * kSector &&
            extent.role != "zero") {
          owner = fmt::format("layer {} ({})", l.index, l.path);
        }
      }
      if (!run || run->path != extent.path ||
          run->file_offset != extent.file_offset_sectors * kSector ||
          run->length != extent.sectors * kSector) {
        problem(
            fmt::format("{} at {}: the descriptor maps {} at file offset {} ({} bytes), "
                        "layout.json says {} at {} ({} bytes)",
                        owner, where(offset), run ? run->path : "nothing",
                        run ? run->file_offset : 0, run ? run->length : 0, extent.path,
                        extent.file_offset_sectors * kSector, extent.sectors * kSector));
      }
    }
  }

  // GPT: strict validation (CRCs, backup) by the host library, then entry-by-entry against
  // layout.json and between the two copies, so damage is pinned to a partition and its layer.
  void check_gpt() {
    primary_ = read_raw_gpt(disk_, 1);
    gpt_expected_ = layout_ ? layout_->mode == "gpt" : primary_.present;
    if (layout_) {
      report_.mode = layout_->mode;
    } else {
      report_.mode = primary_.present ? "gpt" : "flat";
    }
    if (!gpt_expected_) return;
    if (!primary_.present) {
      problem(fmt::format("GPT: no primary header (\"EFI PART\") at {}", where(kSector)));
      return;
    }
    backup_ = read_raw_gpt(disk_, report_.disk_bytes / kSector - 1);
    if (!backup_->present) {
      problem(fmt::format("GPT: no backup header at {}", where(report_.disk_bytes - kSector)));
    }
    try {
      UniqueFd image = gpt_image(disk_, report_.disk_bytes);
      gpt::Table table = gpt::read_table(image.get(), "the disk's GPT", true);
      if (layout_ && !layout_->disk_guid.empty() &&
          lower(gpt::format_guid(table.disk_guid)) != lower(layout_->disk_guid)) {
        problem(fmt::format("GPT: disk GUID {} differs from layout.json's {}",
                            gpt::format_guid(table.disk_guid), layout_->disk_guid));
      }
    } catch (const Error& error) {
      problem(fmt::format("GPT at {}: {}", where(0), error.what()));
    }
  }

  // The layers to check: layout.json's, else the GPT's used entries, else the whole disk.
  void plan_layers() {
    if (layout_) {
      for (const auto& l : layout_->layers) {
        LayerWork w;
        w.layer.index = l.index;
        w.layer.path = l.path;
        w.layer.disk_offset = l.first_lba * kSector;
        w.layer.partition = l.partition;
        w.expected = l;
        w.region_end = (l.first_lba + l.sectors) * kSector;
        work_.push_back(std::move(w));
      }
    } else if (primary_.present) {
      for (size_t i = 0; i < primary_.entries.size(); ++i) {
        const RawEntry& e = primary_.entries[i];
        if (!e.used()) continue;
        LayerWork w;
        w.layer.index = i;
        w.layer.disk_offset = e.first_lba * kSector;
        w.layer.partition = static_cast<uint32_t>(i + 1);
        w.region_end = (e.last_lba + 1) * kSector;
        work_.push_back(std::move(w));
      }
    } else {
      LayerWork w;
      w.layer.index = 0;
      w.region_end = report_.disk_bytes;
      work_.push_back(std::move(w));
    }
  }

  void fail(VerifiedLayer& layer, std::string message) {
    layer.ok = false;
    problem(std::move(message));
  }

  // What the disk holds where the layer should be: the file, its identity, its GPT entry and
  // the superblock where the guest finds it.
  void check_layer(LayerWork& w) {
    VerifiedLayer& layer = w.layer;
    uint64_t region = w.region_end > layer.disk_offset ? w.region_end - layer.disk_offset : 0;
    auto run = disk_.contiguous_run(layer.disk_offset, region);
    if (!run) {
      if (layer.path.empty()) layer.path = "?";
      fail(layer, fmt::format("{} at {}: outside the disk ({} bytes)", layer.name(),
                              where(layer.disk_offset), report_.disk_bytes));
      return;
    }
    if (layer.path.empty()) layer.path = run->path;
    // Digest length: the layer file as mapped (== `sha256sum layer.erofs` for a whole file).
    uint64_t file_size = static_cast<uint64_t>(disk_.file_for(run->path).st.st_size);
    uint64_t mapped_file =
        run->file_offset < file_size ? std::min(run->length, file_size - run->file_offset) : 0;
    layer.length = w.expected && w.expected->file_size != 0
                       ? std::min(w.expected->file_size, region)
                       : mapped_file;

    if (w.expected && !raw_image_ && run->path != w.expected->path) {
      fail(layer, fmt::format("{} at {}: the disk reads {} there", layer.name(),
                              where(layer.disk_offset), run->path));
    }
    // The file must still be the one compose read (not replaced, retargeted or rewritten).
    if (raw_image_ && w.expected) {
      check_raw_layer_file(w);
    } else if (w.expected && w.expected->identity) {
      if (auto changed = identity_change(disk_.file_for(w.expected->path), *w.expected)) {
        fail(layer,
             fmt::format("{}: the file is no longer the one composed: {}", layer.name(), *changed));
      }
    }
    if (w.expected && w.expected->file_size != 0 && file_size != w.expected->file_size &&
        run->path == w.expected->path) {
      fail(layer, fmt::format("{} at {}: file is {} bytes, layout.json says {}", layer.name(),
                              where(layer.disk_offset), file_size, w.expected->file_size));
    }
    if (gpt_expected_ && primary_.present && layer.partition) check_gpt_entry(w);
    if (!w.expected || w.expected->erofs) check_superblock(w, *run);
  }

  // A raw image holds its own copy of each layer (shared blocks are copy-on-write): a layer
  // file changed or gone since compose leaves the image intact but no longer equal to it.
  void check_raw_layer_file(LayerWork& w) {
    std::optional<std::string> changed;
    try {
      const InputFile& file = disk_.file_for(w.expected->path);
      if (w.expected->identity) changed = identity_change(file, *w.expected);
    } catch (const Error& error) {
      changed = fmt::format("it cannot be opened: {}", error.what());
    }
    if (!changed) return;
    stale_layers_.insert(w.layer.index);
    fail(w.layer, fmt::format("{}: the layer file changed after compose ({}); {} still holds the "
                              "layer as composed, so the image is consistent in itself but no "
                              "longer matches the layer file",
                              w.layer.name(), *changed, report_.image));
  }

  // GPT entry for this layer's partition, primary and backup, against layout.json.
  void check_gpt_entry(LayerWork& w) {
    VerifiedLayer& layer = w.layer;
    size_t slot = *layer.partition - 1;
    if (slot >= primary_.entries.size() || !primary_.entries[slot].used()) {
      fail(layer, fmt::format("{}: GPT entry for partition {} is missing or empty", layer.name(),
                              *layer.partition));
      return;
    }
    const RawEntry& entry = primary_.entries[slot];
    layer.partuuid = lower(gpt::format_guid(entry.unique));
    if (w.expected) {
      if (entry.first_lba != w.expected->partition_first_lba ||
          entry.last_lba != w.expected->partition_last_lba) {
        fail(layer, fmt::format("{}: GPT partition {} spans LBA {}..{}, layout.json says {}..{}",
                                layer.name(), *layer.partition, entry.first_lba, entry.last_lba,
                                w.expected->partition_first_lba, w.expected->partition_last_lba));
      }
      if (!w.expected->partuuid.empty() && layer.partuuid != lower(w.expected->partuuid)) {
        fail(layer,
             fmt::format("{}: GPT partition {} has PARTUUID {}, layout.json says {}", layer.name(),
                         *layer.partition, layer.partuuid, w.expected->partuuid));
      }
    }
    if (backup_ && backup_->present &&
        (slot >= backup_->entries.size() || !(backup_->entries[slot] == entry))) {
      fail(layer, fmt::format("{}: primary and backup GPT entries for partition {} differ",
                              layer.name(), *layer.partition));
    }
  }

  // The superblock where the guest finds it.
  void check_superblock(LayerWork& w, const VirtualDisk::Run& run) {
    VerifiedLayer& layer = w.layer;
    try {
      int fd = disk_.fd_for(run.path);
      ErofsInfo info = probe_image_at(fd, run.file_offset, run.length, layer.name());
      layer.erofs_uuid = info.uuid_string;
      if (w.expected && !w.expected->erofs_uuid.empty() &&
          lower(info.uuid_string) != lower(w.expected->erofs_uuid)) {
        fail(layer, fmt::format("{} at {}: EROFS UUID {}, layout.json says {} (a different "
                                "layer?)",
                                layer.name(), where(layer.disk_offset), info.uuid_string,
                                w.expected->erofs_uuid));
      }
      if (w.expected && w.expected->fs_size != 0 && info.fs_size != w.expected->fs_size) {
        fail(layer, fmt::format("{} at {}: EROFS filesystem is {} bytes, layout.json says {}",
                                layer.name(), where(layer.disk_offset), info.fs_size,
                                w.expected->fs_size));
      }
    } catch (const Error& error) {
      // The probe names the image itself; keep one name per message.
      std::string message = error.what();
      if (message.rfind(layer.name() + ": ", 0) == 0) message.erase(0, layer.name().size() + 2);
      fail(layer, fmt::format("{} at {}: {}", layer.name(),
                              where(layer.disk_offset + kSuperblockOffset), message));
    }
  }

  // The expect file's digests, each matched to exactly one layer.
  void match_expected_digests() {
    std::vector<ExpectedDigest> expected;
    if (options_.expect_path) {
      expected = parse_expected_digests(read_text(*options_.expect_path, "expect file"),
                                        *options_.expect_path);
    }
    digest_ = options_.digest || options_.expect_path.has_value();
    expected_for_.assign(work_.size(), std::nullopt);
    for (const auto& e : expected) {
      std::vector<size_t> matches;
      for (size_t i = 0; i < work_.size(); ++i) {
        const auto& l = work_[i].layer;
        if (e.key == std::to_string(l.index) || e.key == l.path) matches.push_back(i);
      }
      if (matches.empty()) {
        for (size_t i = 0; i < work_.size(); ++i) {
          if (fs::path(work_[i].layer.path).filename() == fs::path(e.key).filename()) {
            matches.push_back(i);
          }
        }
      }
      if (matches.size() != 1) {
        problem(fmt::format(
            "expect file {}: '{}' {}", *options_.expect_path, e.key,
            matches.empty() ? "names no layer of this disk" : "matches more than one layer"));
        continue;
      }
      expected_for_[matches[0]] = e.digest;
      work_[matches[0]].layer.expected_sha256 = to_hex(e.digest);
    }
  }

  // Streams: each layer's bytes, then every other byte of the disk (zeros except GPT areas and
  // flat mode's dm-verity hash areas).
  void plan_reads() {
    std::vector<Range> covered;  // layer bytes
    digests_.resize(work_.size());
    for (size_t i = 0; i < work_.size(); ++i) {
      const auto& l = work_[i].layer;
      streams_.push_back({disk_.segments(l.disk_offset, l.length)});
      if (digest_) {
        digests_[i] = std::make_unique<Sha256>();
        sinks_.push_back(digests_[i].get());
      } else {
        sinks_.push_back(&discard_);
      }
      covered.emplace_back(l.disk_offset, l.disk_offset + l.length);
    }
    // GPT structures are checked above; they are read but not zero-checked.
    if (primary_.present) {
      uint64_t entry_bytes =
          uint64_t{primary_.entry_count} * std::max<uint32_t>(primary_.entry_size, 128);
      structures_.emplace_back(0, primary_.entries_lba * kSector + entry_bytes);
      if (backup_ && backup_->present) {
        structures_.emplace_back(backup_->entries_lba * kSector, report_.disk_bytes);
      } else {
        structures_.emplace_back(report_.disk_bytes - kSector - entry_bytes, report_.disk_bytes);
      }
    }
    check_flat_verity_areas(covered);
    std::sort(covered.begin(), covered.end());
    uint64_t cursor = 0;
    for (const auto& [begin, end] : covered) {
      if (begin > cursor) add_region(cursor, begin);
      cursor = std::max(cursor, end);
    }
    if (cursor < report_.disk_bytes) add_region(cursor, report_.disk_bytes);
    if (raw_image_) compare_with_sources();
  }

  // Raw image: every stream that covers bytes compose took from a file (and flat mode's
  // dm-verity areas, read only here) is compared with that file as it is read.
  void compare_with_sources() {
    for (auto& source : raw_sources(*layout_)) {
      if (source.layer && stale_layers_.count(*source.layer)) continue;  // reported already
      try {
        source.fd = disk_.fd_for(source.path);
      } catch (const Error& error) {
        problem(fmt::format("{} at {}: {}", source.path, where(source.disk_begin), error.what()));
        continue;
      }
      sources_.push_back(std::move(source));
    }
    for (const auto& source : sources_) {
      bool unread = false;  // a flat dm-verity area: not part of any stream so far
      for (const auto& area : verity_areas_) unread |= area.first == source.disk_begin;
      if (unread) {
        streams_.push_back(
            {disk_.segments(source.disk_begin, source.disk_end - source.disk_begin)});
        sinks_.push_back(&discard_);
      }
    }
    for (size_t i = 0; i < streams_.size(); ++i) {
      if (streams_[i].segments.empty()) continue;
      uint64_t start = streams_[i].segments.front().file_offset;  // one extent: disk == file
      uint64_t end = start + streams_[i].length();
      std::vector<const RawSource*> overlapping;
      for (const auto& source : sources_) {
        if (source.disk_begin < end && source.disk_end > start) overlapping.push_back(&source);
      }
      if (overlapping.empty()) continue;
      compares_.push_back(std::make_unique<SourceCompare>(sinks_[i], start, overlapping));
      sinks_[i] = compares_.back().get();
    }
  }

  // "layer 1 (/path) at disk offset ...": a raw image's byte that is not its source file's.
  void report_source_mismatches() {
    for (const auto& compare : compares_) {
      const auto& mismatch = compare->first_mismatch();
      if (!mismatch) continue;
      const RawSource& source = *mismatch->source;
      VerifiedLayer* owner = nullptr;
      for (auto& w : work_) {
        if (source.layer && w.layer.index == *source.layer) owner = &w.layer;
      }
      std::string name = owner ? owner->name() : source.path;
      if (std::find(verity_areas_.begin(), verity_areas_.end(),
                    Range{source.disk_begin, source.disk_end}) != verity_areas_.end()) {
        name = "dm-verity hash area of " + name;
      }
      std::string message = fmt::format(
          "{} at {}: {} differs from {} at its byte {}: the image was changed, or the layer "
          "file was rewritten in place after compose",
          name, where(mismatch->disk_offset), report_.image, source.path, mismatch->file_offset);
      if (owner) {
        fail(*owner, std::move(message));
      } else {
        problem(std::move(message));
      }
    }
  }

  // Flat mode puts each protected layer's dm-verity hash area after the last device: not a
  // zero gap. Its start must hold the verity superblock the guest will load.
  void check_flat_verity_areas(std::vector<Range>& covered) {
    if (!layout_) return;
    for (const auto& extent : layout_->extents) {
      if (extent.role != "verity") continue;
      uint64_t offset = extent.first_lba * kSector;
      covered.emplace_back(offset, offset + extent.sectors * kSector);
      verity_areas_.push_back(covered.back());
      std::string bytes = disk_.read(offset, kVeritySuperblockSize);
      try {
        (void)parse_verity_superblock(
            std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), extent.path);
      } catch (const std::exception& error) {
        problem(fmt::format("dm-verity hash area of {} at {}: {}", extent.path, where(offset),
                            error.what()));
      }
    }
  }

  std::string gap_label(uint64_t offset) const {
    const VerifiedLayer* before = nullptr;
    for (const auto& w : work_) {
      if (offset >= w.layer.disk_offset && offset < w.region_end) {
        return fmt::format("{} padding", w.layer.name());
      }
      if (w.layer.disk_offset <= offset &&
          (before == nullptr || w.layer.disk_offset > before->disk_offset)) {
        before = &w.layer;
      }
    }
    return before != nullptr ? fmt::format("gap after {}", before->name())
                             : std::string("gap before the first layer");
  }

  // [begin, end) outside every layer: read, split around GPT structures, zero-checked.
  void add_region(uint64_t begin, uint64_t end) {
    uint64_t at = begin;
    while (at < end) {
      uint64_t next = end;
      bool structural = false;
      for (const auto& [s, e] : structures_) {
        if (at >= s && at < e) {
          structural = true;
          next = std::min(end, e);
          break;
        }
        if (s > at && s < next) next = s;
      }
      streams_.push_back({disk_.segments(at, next - at)});
      if (structural) {
        sinks_.push_back(&discard_);
      } else {
        gaps_.push_back(std::make_unique<GapStream>());
        gaps_.back()->disk_offset = at;
        gaps_.back()->label = gap_label(at);
        sinks_.push_back(&gaps_.back()->check);
      }
      at = next;
    }
  }

  // One pass over every stream: io_uring reads, digests on a pool of threads.
  void read_all() {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    unsigned threads = digest_ ? (options_.threads != 0 ? options_.threads : cores) : 0;
    threads = std::min<unsigned>(threads, static_cast<unsigned>(std::max<size_t>(work_.size(), 1)));
    ReaderOptions reader_options;
    reader_options.chunk_size = options_.chunk_size;
    reader_options.queue_depth = options_.queue_depth;
    reader_options.direct = options_.direct;
    reader_options.parallel_streams = std::max(1u, threads);
    reader_options.consumer_buffers = std::max(4u, 3 * std::max(1u, threads));
    UringReader reader(reader_options);
    uint64_t total = 0;
    for (const auto& s : streams_) total += s.length();
    ProgressBar progress = options_.progress ? ProgressBar::for_stderr("verify", total)
                                             : ProgressBar("verify", total, STDERR_FILENO, false);
    {
      OrderedStreamPool pool(sinks_, threads);
      report_.stats = reader.run(
          streams_,
          [&](const Chunk& chunk, ChunkLease lease) { pool.push(chunk, std::move(lease)); },
          [&](uint64_t done) { progress.update(done); });
      pool.finish();
    }
    progress.finish();
  }

  // Gap, digest and dm-verity results; the layers go into the report.
  void finish() {
    report_source_mismatches();
    for (const auto& gap : gaps_) {
      if (auto at = gap->check.first_nonzero()) {
        problem(fmt::format("{} at {}: non-zero byte where the guest must read zeros", gap->label,
                            where(gap->disk_offset + *at)));
      }
    }
    for (size_t i = 0; i < work_.size(); ++i) {
      VerifiedLayer& layer = work_[i].layer;
      if (digest_) layer.sha256 = to_hex(digests_[i]->finish());
      if (expected_for_[i] && layer.sha256 != to_hex(*expected_for_[i])) {
        fail(layer, fmt::format("{} at {}: SHA-256 of its {} bytes is {}, expected {}",
                                layer.name(), where(layer.disk_offset), layer.length, layer.sha256,
                                to_hex(*expected_for_[i])));
      }
      if (options_.check_verity && work_[i].expected &&
          !work_[i].expected->verity_root_hash.empty()) {
        check_layer_verity(disk_, *work_[i].expected, layer, options_.threads, image_,
                           [this](std::string message) { problem(std::move(message)); });
      }
      report_.layers.push_back(std::move(layer));
    }
  }

  const VerifyOptions& options_;
  VerifyReport report_;
  std::string layout_path_;
  std::optional<Layout> layout_;
  vmdk::ExtentMap map_;
  VirtualDisk disk_{map_};
  RawGpt primary_;
  std::optional<RawGpt> backup_;
  bool gpt_expected_ = false;
  std::vector<LayerWork> work_;
  bool digest_ = false;
  std::vector<std::optional<Sha256Digest>> expected_for_;
  // What read_all reads: one stream per layer, then the rest of the disk.
  std::vector<ReadStream> streams_;
  std::vector<StreamSink*> sinks_;
  std::vector<std::unique_ptr<Sha256>> digests_;  // per layer, when digesting
  DiscardSink discard_;
  std::vector<std::unique_ptr<GapStream>> gaps_;  // in stream order
  std::vector<Range> structures_;                 // GPT areas: read, not zero-checked
  std::vector<Range> verity_areas_;               // flat mode's dm-verity hash areas
  // A raw composed disk (format raw, gpt or flat): the image, its sources, the comparisons.
  bool raw_image_ = false;
  std::optional<RawImageRef> image_;
  std::set<size_t> stale_layers_;  // layer files changed since compose: not compared
  std::vector<RawSource> sources_;
  std::vector<std::unique_ptr<SourceCompare>> compares_;
};

}  // namespace

VerifyReport verify_disk(const VerifyOptions& options) { return DiskVerifier(options).run(); }

}  // namespace evmdk::host
