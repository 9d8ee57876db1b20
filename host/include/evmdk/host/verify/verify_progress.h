#pragma once
// A one-line progress bar for long verify runs. It draws only when its output is a terminal, so
// logs and pipes stay clean.
#include <chrono>
#include <cstdint>
#include <string>

namespace evmdk::host {

// Renders "label [#####-----]  45%  1.2 GiB / 2.7 GiB  850 MiB/s" for `width` bar cells.
std::string render_progress_line(const std::string& label, uint64_t done, uint64_t total,
                                 double bytes_per_second, int width = 30);
// "512 B", "1.5 KiB", "2.0 GiB" ...
std::string format_bytes(double bytes);

class ProgressBar {
 public:
  // Draws to `fd` only when enabled; for_stderr() enables it when stderr is a terminal.
  ProgressBar(std::string label, uint64_t total, int fd, bool enabled);
  static ProgressBar for_stderr(std::string label, uint64_t total);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  // Redraws at most ten times a second.
  void update(uint64_t done);
  // Draws the final state and ends the line.
  void finish();

 private:
  void draw(uint64_t done);
  std::string label_;
  uint64_t total_;
  int fd_;
  bool enabled_;
  bool finished_ = false;
  uint64_t last_done_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace evmdk::host
