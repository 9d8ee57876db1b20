#include "evmdk/host/verify/verify_progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace evmdk::host {

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t unit = 0;
  while (bytes >= 1024.0 && unit + 1 < std::size(kUnits)) {
    bytes /= 1024.0;
    ++unit;
  }
  if (unit == 0) return fmt::format("{:.0f} B", bytes);
  return fmt::format("{:.1f} {}", bytes, kUnits[unit]);
}

std::string render_progress_line(const std::string& label, uint64_t done, uint64_t total,
                                 double bytes_per_second, int width) {
  double fraction =
      total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  int filled = static_cast<int>(fraction * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '-');
  return fmt::format("{} [{}] {:3.0f}%  {} / {}  {}/s", label, bar, fraction * 100.0,
                     format_bytes(static_cast<double>(done)),
                     format_bytes(static_cast<double>(total)), format_bytes(bytes_per_second));
}

ProgressBar::ProgressBar(std::string label, uint64_t total, int fd, bool enabled)
    : label_(std::move(label)),
      total_(total),
      fd_(fd),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar ProgressBar::for_stderr(std::string label, uint64_t total) {
  return ProgressBar(std::move(label), total, STDERR_FILENO, ::isatty(STDERR_FILENO) == 1);
}

ProgressBar::~ProgressBar() {
  // An interrupted run (an error) must not leave the cursor mid-line before the error message.
  if (enabled_ && !finished_ && last_done_ > 0) {
    [[maybe_unused]] auto ignored = ::write(fd_, "\n", 1);
  }
}

void ProgressBar::update(uint64_t done) {
  if (!enabled_) return;
  last_done_ = std::max<uint64_t>(done, 1);
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(done);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  draw(total_);
  [[maybe_unused]] auto ignored = ::write(fd_, "\n", 1);
}

void ProgressBar::draw(uint64_t done) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  // \r and erase-to-end-of-line redraw in place.
  std::string line = "\r" + render_progress_line(label_, done, total_, rate) + "\x1b[K";
  [[maybe_unused]] auto ignored = ::write(fd_, line.data(), line.size());
}

}  // namespace evmdk::host
