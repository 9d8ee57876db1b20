// Disk lookup by GPT disk GUID (disk_scan.h): one sector read per whole disk, checked by the
// project's GPT header decoder (evmdk/ondisk/gpt.h), never by the kernel's partition parsing.
#include "disk_scan.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <vector>

#include "evmdk/error.h"
#include "evmdk/unique_fd.h"

namespace fs = std::filesystem;

namespace evmdk::guest::detail {
namespace {

bool candidate_name(const std::string& name) {
  for (const char* prefix : {"vd", "xvd", "sd", "nvme", "loop"}) {
    if (name.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// The disk's logical block size (the unit of GPT LBAs), 512 when sysfs does not say.
size_t logical_block_size(const fs::path& sys_dir) {
  std::ifstream in(sys_dir / "queue" / "logical_block_size");
  std::string text;
  if (!(in >> text)) return ondisk::gpt::kSectorSize;
  size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 512 || value > 65536 ||
      (value & (value - 1)) != 0) {
    return ondisk::gpt::kSectorSize;
  }
  return value;
}

enum class Read { Match, Other, Failed };

Read check_disk(const std::string& node, size_t block, const ondisk::Guid& guid) {
  UniqueFd fd(::open(node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISBLK(st.st_mode)) return Read::Failed;
  std::vector<uint8_t> sector(block);
  ssize_t got = ::pread(fd.get(), sector.data(), sector.size(), static_cast<off_t>(block));
  if (got != static_cast<ssize_t>(sector.size())) return Read::Failed;  // also empty loops
  if (!ondisk::has_gpt_signature(sector)) return Read::Other;
  try {
    ondisk::GptHeader header = ondisk::parse_gpt_header(sector, 1, node, "primary");
    return header.disk_guid == guid ? Read::Match : Read::Other;
  } catch (const Error&) {
    return Read::Other;  // a damaged or foreign header is not the disk
  }
}

}  // namespace

GptScan scan_gpt_disk_guid(const ondisk::Guid& guid) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/class/block", ec)) {
    std::string name = entry.path().filename().string();
    if (!candidate_name(name) || fs::exists(entry.path() / "partition", ec)) continue;
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());  // stable messages
  GptScan scan;
  for (const auto& name : names) {
    if (scan.read + scan.skipped >= kMaxGptScan) break;
    std::string node = "/dev/" + name;
    switch (check_disk(node, logical_block_size(fs::path("/sys/class/block") / name), guid)) {
      case Read::Match: scan.matches.push_back(node); [[fallthrough]];
      case Read::Other: ++scan.read; break;
      case Read::Failed: ++scan.skipped; break;
    }
  }
  return scan;
}

}  // namespace evmdk::guest::detail
