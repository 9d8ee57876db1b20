#pragma once
// A small QMP client for the guest harness: what a Kata-style shim does to a running QEMU
// (blockdev-add, device_add, device_del, blockdev-del), over the unix socket GuestConfig's
// qmp_socket asks QEMU to serve. QMP is one JSON object per line: a greeting, then
// `qmp_capabilities` leaves negotiation mode; each command gets a "return" or an "error"
// carrying the id it was sent with, and asynchronous events ({"event": ...}) may come in
// between at any time, so they are queued for wait_event().
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "process.h"

namespace evmdk::qemu {

class QmpClient {
 public:
  using Clock = std::chrono::steady_clock;

  // What QEMU answered to one command: ok with its "return" value, or its error class and
  // description (e.g. GenericError "Failed to get shared "write" lock").
  struct Reply {
    bool ok = false;
    nlohmann::json value;
    std::string error_class;
    std::string error;
  };

  // Connects (QEMU creates the socket a moment after it starts, so this retries until `limit`),
  // reads the greeting and leaves capabilities negotiation.
  explicit QmpClient(const std::filesystem::path& socket_path,
                     std::chrono::seconds limit = std::chrono::seconds(60)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (socket_path.string().size() >= sizeof(address.sun_path)) {
      throw HarnessError("QMP socket path too long for a unix socket: " + socket_path.string());
    }
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
    auto deadline = Clock::now() + limit;
    while (true) {
      fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd_ < 0) throw HarnessError(std::string("socket: ") + std::strerror(errno));
      if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) break;
      int error = errno;
      ::close(fd_);
      fd_ = -1;
      if (Clock::now() >= deadline) {
        throw HarnessError("cannot connect to QMP at " + socket_path.string() + ": " +
                           std::strerror(error));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto greeting = read_message(deadline);
    if (!greeting.contains("QMP")) throw HarnessError("QMP greeting expected, got " + greeting.dump());
    auto negotiated = execute("qmp_capabilities");
    if (!negotiated.ok) throw HarnessError("qmp_capabilities refused: " + negotiated.error);
  }
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Sends one command and waits for its reply; events that arrive first are queued.
  Reply execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                std::chrono::seconds limit = std::chrono::seconds(60)) {
    nlohmann::json request{{"execute", command}, {"id", ++next_id_}};
    if (!arguments.is_null()) request["arguments"] = arguments;
    send(request.dump() + "\n");
    auto deadline = Clock::now() + limit;
    while (true) {
      nlohmann::json message;
      try {
        message = read_message(deadline);
      } catch (const QmpTimeout&) {
        throw HarnessError(fmt::format("QMP {}: no reply within {} s", command, limit.count()));
      }
      if (message.contains("event")) {
        events_.push_back(message);
        continue;
      }
      if (message.value("id", nlohmann::json()) != request["id"]) {
        throw HarnessError("QMP reply to another command while waiting for " + command + ": " +
                           message.dump());
      }
      Reply reply;
      if (message.contains("return")) {
        reply.ok = true;
        reply.value = message["return"];
      } else if (message.contains("error")) {
        reply.error_class = message["error"].value("class", "");
        reply.error = message["error"].value("desc", "");
      } else {
        throw HarnessError("QMP reply without return or error: " + message.dump());
      }
      return reply;
    }
  }

  // execute() that throws, naming the command and QEMU's error, unless QEMU accepted it.
  nlohmann::json execute_ok(const std::string& command, const nlohmann::json& arguments = nullptr,
                            std::chrono::seconds limit = std::chrono::seconds(60)) {
    auto reply = execute(command, arguments, limit);
    if (!reply.ok) {
      throw HarnessError("QMP " + command + " " + arguments.dump() + " failed: " +
                         reply.error_class + ": " + reply.error);
    }
    return reply.value;
  }

  // The first event named `name` whose data satisfies `match` (queued or arriving within
  // `limit`), removed from the queue; nullopt when none came in time.
  std::optional<nlohmann::json> wait_event(
      const std::string& name, const std::function<bool(const nlohmann::json& data)>& match,
      std::chrono::seconds limit) {
    auto deadline = Clock::now() + limit;
    while (true) {
      for (auto it = events_.begin(); it != events_.end(); ++it) {
        if ((*it)["event"] == name && match(it->value("data", nlohmann::json::object()))) {
          auto event = *it;
          events_.erase(it);
          return event;
        }
      }
      try {
        auto message = read_message(deadline);
        if (message.contains("event")) events_.push_back(message);
      } catch (const QmpTimeout&) {
        return std::nullopt;
      }
    }
  }

  // Every line sent and received, for failure messages.
  const std::string& transcript() const { return transcript_; }

 private:
  struct QmpTimeout : HarnessError {
    using HarnessError::HarnessError;
  };

  void send(const std::string& line) {
    transcript_ += "-> " + line;
    size_t sent = 0;
    while (sent < line.size()) {
      ssize_t n = ::send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw HarnessError(std::string("QMP send failed: ") + std::strerror(errno));
      sent += static_cast<size_t>(n);
    }
  }

  nlohmann::json read_message(Clock::time_point deadline) {
    while (true) {
      auto newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
        transcript_ += "<- " + line + "\n";
        try {
          return nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& error) {
          throw HarnessError("QMP sent a line that is not JSON (" + std::string(error.what()) +
                             "): " + line);
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw QmpTimeout("QMP: no message in time");
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
      if (ready < 0 && errno != EINTR) throw HarnessError(std::string("QMP poll: ") + std::strerror(errno));
      if (ready <= 0) continue;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw HarnessError("QMP connection closed by QEMU");
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  int fd_ = -1;
  int next_id_ = 0;
  std::string buffer_;
  std::string transcript_;
  std::deque<nlohmann::json> events_;
};

}  // namespace evmdk::qemu
