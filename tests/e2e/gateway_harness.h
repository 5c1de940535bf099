// Shared pieces of the gateway's black-box tests (gateway_test.cc,
// gateway_abuse_test.cc): a Python origin (gateway_upstream.py), a real
// `capstan gateway` process, curl, and raw-socket exchanges for what curl
// will not send. Every process started here is killed on destruction.
//
// REQUIRES: the including target defines CAPSTAN_SOURCE_DIR.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {

inline std::string UpstreamScript() {
  return std::string(CAPSTAN_SOURCE_DIR) + "/tests/e2e/gateway_upstream.py";
}

// Sends raw bytes to 127.0.0.1:port and returns everything answered until
// the peer closes or `timeout` passes without a byte. `half_close` shuts our
// sending side after the bytes, so a peer waiting for more of a request sees
// the end at once instead of a timeout.
inline std::string RawExchange(int port, const std::string& bytes,
                               std::chrono::milliseconds timeout = std::chrono::seconds(5),
                               bool half_close = false) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "<connect failed>";
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (half_close) shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// A Python origin on a port of its choosing.
class Origin {
 public:
  Origin(const TempDir& dir, const std::string& name) {
    process_ =
        std::make_unique<Process>(std::vector<std::string>{"python3", UpstreamScript(), name},
                                  dir.path() + "/" + name + ".log");
    std::smatch m;
    bool up = Eventually([&] {
      std::string log = process_->Log();
      static const std::regex kPort("port ([0-9]+)");
      if (!std::regex_search(log, m, kPort)) return false;
      port_ = std::stoi(m[1]);
      return true;
    });
    EXPECT_TRUE(up) << process_->Log();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void Kill() { process_->Kill(); }
  Process* process() { return process_.get(); }

  // The request lines this origin has parsed (a JSON list, as text), asked
  // of it directly, not through the gateway.
  std::string Requests() const {
    std::string answer =
        RawExchange(port_, "GET /__requests HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    size_t body = answer.find("\r\n\r\n");
    return body == std::string::npos ? answer : answer.substr(body + 4);
  }
  void ResetRequests() const {
    RawExchange(port_, "GET /__reset HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
  }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// How many times `needle` occurs in `haystack` (without overlaps).
inline size_t CountOf(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size()))
    ++n;
  return n;
}

// A capstan gateway with the given flags (e.g. --upstream, or --config).
class GatewayProcess {
 public:
  GatewayProcess(const TempDir& dir, std::vector<std::string> flags) {
    port_ = PickFreePort();
    std::vector<std::string> argv = {CapstanBinary(), "gateway"};
    bool has_config = false;
    bool has_threads = false;
    for (const auto& f : flags) {
      has_config |= f == "--config";
      has_threads |= f == "--threads";
    }
    if (!has_threads) {
      argv.push_back("--threads");
      argv.push_back("2");
    }
    if (!has_config) {
      argv.push_back("--listen");
      argv.push_back("127.0.0.1:" + std::to_string(port_));
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    process_ = std::make_unique<Process>(argv, dir.path() + "/gateway.log");
    bool up =
        Eventually([&] { return process_->Log().find("listening on port") != std::string::npos; });
    EXPECT_TRUE(up) << process_->Log();
    if (has_config) {
      std::smatch m;
      std::string log = process_->Log();
      if (std::regex_search(log, m, std::regex("listening on port ([0-9]+)")))
        port_ = std::stoi(m[1]);
    }
  }
  int port() const { return port_; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  Process* process() { return process_.get(); }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

inline CommandResult Curl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"curl", "-sS", "--max-time", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

}  // namespace capstan::e2e
