#pragma once
// Writer for the cpio "newc" format the kernel unpacks as initramfs. Written by hand (it is a
// 110-byte hex header per entry) so the harness needs no mknod for /dev/console and produces
// the same bytes for the same inputs (fixed mtime, inode numbers in order of addition).
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "process.h"

namespace evmdk::qemu {

class CpioWriter {
 public:
  explicit CpioWriter(const std::filesystem::path& path)
      : path_(path), out_(path, std::ios::binary | std::ios::trunc) {
    if (!out_) throw HarnessError("cannot create " + path.string());
  }

  void directory(const std::string& name, unsigned mode = 0755) {
    std::string clean = strip(name);
    if (clean.empty() || directories_.count(clean)) return;
    parents(clean);
    directories_.insert(clean);
    entry(clean, 0040000 | mode, 0, 0, 0, {});
  }

  void file(const std::string& name, const std::string& contents, unsigned mode = 0644) {
    std::string clean = strip(name);
    parents(clean);
    entry(clean, 0100000 | mode, contents.size(), 0, 0, contents);
  }

  void file_from(const std::string& name, const std::filesystem::path& host_path, unsigned mode) {
    std::string clean = strip(name);
    parents(clean);
    std::ifstream in(host_path, std::ios::binary);
    if (!in) throw HarnessError("cannot read " + host_path.string() + " for the initramfs");
    auto size = std::filesystem::file_size(host_path);
    header(clean, 0100000 | mode, size, 0, 0);
    out_ << in.rdbuf();
    pad(size);
  }

  void symlink(const std::string& name, const std::string& target) {
    std::string clean = strip(name);
    parents(clean);
    entry(clean, 0120000 | 0777, target.size(), 0, 0, target);
  }

  void char_device(const std::string& name, unsigned major, unsigned minor, unsigned mode) {
    std::string clean = strip(name);
    parents(clean);
    entry(clean, 0020000 | mode, 0, major, minor, {});
  }

  // Writes the trailer, pads to 512 bytes (so another archive can be appended) and flushes.
  void finish() {
    entry("TRAILER!!!", 0, 0, 0, 0, {});
    auto at = static_cast<uint64_t>(out_.tellp());
    out_ << std::string((512 - at % 512) % 512, '\0');
    out_.close();
    if (!out_) throw HarnessError("cannot write " + path_.string());
  }

 private:
  static std::string strip(const std::string& name) {
    std::string clean = name;
    while (!clean.empty() && clean.front() == '/') clean.erase(0, 1);
    while (!clean.empty() && clean.back() == '/') clean.pop_back();
    return clean;
  }

  void parents(const std::string& name) {
    auto slash = name.rfind('/');
    if (slash != std::string::npos) directory(name.substr(0, slash));
  }

  void header(const std::string& name, unsigned mode, uint64_t size, unsigned rmajor,
              unsigned rminor) {
    if (size > 0xffffffffULL) throw HarnessError("initramfs entry too large: " + name);
    out_ << fmt::format("070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}"
                        "{:08X}{:08X}",
                        ++inode_, mode, 0, 0, (mode & 0040000) ? 2 : 1, 0, size, 0, 0, rmajor,
                        rminor, name.size() + 1, 0);
    out_ << name << '\0';
    pad(110 + name.size() + 1);
  }

  void entry(const std::string& name, unsigned mode, uint64_t size, unsigned rmajor,
             unsigned rminor, const std::string& data) {
    header(name, mode, size, rmajor, rminor);
    out_ << data;
    pad(data.size());
  }

  void pad(uint64_t written) { out_ << std::string((4 - written % 4) % 4, '\0'); }

  std::filesystem::path path_;
  std::ofstream out_;
  std::set<std::string> directories_;
  unsigned inode_ = 0;
};

}  // namespace evmdk::qemu
