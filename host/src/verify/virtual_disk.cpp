#include "virtual_disk.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "evmdk/error.h"
#include "evmdk/host/compose/layout.h"
#include "evmdk/ondisk/endian.h"
#include "evmdk/ondisk/gpt.h"
#include "evmdk/vmdk/parser.h"

namespace evmdk::host::verify_detail {

namespace fs = std::filesystem;

namespace {

// A descriptor written with --fdset names /dev/fdset/N, which only QEMU can open (the runtime
// passes each file with add-fd). The qemu.json compose wrote next to it says which file goes
// into which fdset: read those files instead.
void resolve_fdsets(vmdk::QemuReading& reading, const std::string& descriptor) {
  constexpr std::string_view kFdset = "/dev/fdset/";
  std::map<std::string, std::string> file_of;  // "/dev/fdset/N" -> path
  bool loaded = false;
  std::string qemu_json = (fs::path(descriptor).parent_path() / kQemuName).string();
  for (auto& extent : reading.extents) {
    if (extent.resolved_path.rfind(kFdset, 0) != 0) continue;
    if (!loaded) {
      loaded = true;
      if (!fs::exists(qemu_json)) {
        throw Error(
            "extent line {} names {} (fd passing) and there is no {} saying which file "
            "that fdset holds",
            extent.last_line, extent.resolved_path, qemu_json);
      }
      try {
        auto json = nlohmann::json::parse(read_text(qemu_json, kQemuName));
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

}  // namespace

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
      throw Error(
          "verify: {} {}, so it cannot vouch for which files verify reads; fix its owner "
          "and mode, or pass --trust-descriptor to read the files the descriptor names",
          path, problem);
    }
  };
  check(layout_path, false);
  check(fs::absolute(layout_path).parent_path().string(), true);
}

std::string where(uint64_t disk_offset) {
  return fmt::format("disk offset {} (LBA {})", disk_offset, disk_offset / kSector);
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string read_text(const std::string& path, const std::string& what) {
  return read_input_file(path, fmt::format("verify: {}", what), 64u << 20);
}

vmdk::ExtentMap read_descriptor_map(const std::string& descriptor) {
  if (!fs::exists(descriptor)) throw Error("verify: descriptor {} does not exist", descriptor);
  try {
    auto reading = vmdk::read_as_qemu(vmdk::read_descriptor_bytes(descriptor), descriptor);
    resolve_fdsets(reading, descriptor);
    return vmdk::ExtentMap::from_qemu_reading(reading);
  } catch (const std::exception& error) {
    throw_with_context(error, fmt::format("verify: {}", descriptor));
  }
}

std::string VirtualDisk::read(uint64_t offset, uint64_t length) {
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

const InputFile& VirtualDisk::file_for(const std::string& path) {
  auto found = files_.find(path);
  if (found != files_.end()) return found->second;
  return files_.emplace(path, open_input_file(path, "verify: extent file")).first->second;
}

void VirtualDisk::adopt(const std::string& path, InputFile file) {
  files_.insert_or_assign(path, std::move(file));
}

std::optional<VirtualDisk::Run> VirtualDisk::contiguous_run(uint64_t offset, uint64_t limit) const {
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

std::vector<ReadSegment> VirtualDisk::segments(uint64_t offset, uint64_t length) const {
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

RawGpt read_raw_gpt(VirtualDisk& disk, uint64_t header_lba) {
  RawGpt gpt;
  std::string sector = disk.read(header_lba * kSector, kSector);
  if (!ondisk::has_gpt_signature(ondisk::byte_view(sector))) return gpt;
  ondisk::GptHeader header = ondisk::decode_gpt_header(ondisk::byte_view(sector), "GPT header");
  gpt.present = true;
  gpt.alternate_lba = header.alternate_lba;
  gpt.entries_lba = header.entries_lba;
  gpt.entry_count = header.entry_count;
  gpt.entry_size = header.entry_size;
  if (gpt.entry_size < 128 || gpt.entry_count > 4096) return gpt;  // the strict reader reports it
  std::string array =
      disk.read(gpt.entries_lba * kSector, uint64_t{gpt.entry_count} * gpt.entry_size);
  for (uint32_t i = 0; i < gpt.entry_count; ++i) {
    ondisk::GptEntry e = ondisk::decode_gpt_entry(
        ondisk::byte_view(array).subspan(uint64_t{i} * gpt.entry_size), "GPT entry");
    gpt.entries.push_back({e.type, e.unique, e.first_lba, e.last_lba});
  }
  return gpt;
}

UniqueFd gpt_image(VirtualDisk& disk, uint64_t disk_bytes) {
  UniqueFd fd(::memfd_create("evmdk-verify-gpt", MFD_CLOEXEC));
  if (!fd) throw_errno("verify: memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(disk_bytes)) != 0) {
    throw_errno("verify: ftruncate memfd");
  }
  uint64_t area = std::min<uint64_t>(disk_bytes, 1u << 20);
  std::string head = disk.read(0, area);
  write_all(fd.get(), head.data(), head.size(), "GPT head copy", 0);
  std::string tail = disk.read(disk_bytes - area, area);
  write_all(fd.get(), tail.data(), tail.size(), "GPT tail copy",
            static_cast<int64_t>(disk_bytes - area));
  return fd;
}

}  // namespace evmdk::host::verify_detail
