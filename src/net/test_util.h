// Helpers for tests that drive an EventLoop: run a coroutine to completion
// on a fresh loop of a given engine.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include "gtest/gtest.h"
#include "net/event_loop.h"
#include "net/task.h"

namespace capstan::net::testing {

inline std::unique_ptr<EventLoop> NewLoop(IoBackendKind kind, LoopOptions options = {}) {
  options.backend = kind;
  auto loop = EventLoop::Create(options);
  if (!loop.ok()) return nullptr;
  return std::move(loop).value();
}

// Runs `body` on `loop` (on this thread) until it finishes.
inline void RunToCompletion(EventLoop& loop, Task<void> body) {
  struct Runner {
    static Task<void> Run(EventLoop& loop, Task<void> body) {
      co_await std::move(body);
      loop.Stop();
    }
  };
  loop.Spawn(Runner::Run(loop, std::move(body)));
  loop.Run();
}

// A suite run once per I/O engine, with a fresh loop of that engine; skips
// (saying why) where the engine is unavailable.
class EngineTest : public ::testing::TestWithParam<IoBackendKind> {
 protected:
  void SetUp() override {
    loop_ = NewLoop(GetParam());
    if (!loop_) GTEST_SKIP() << IoBackendName(GetParam()) << " is not available here";
    ASSERT_EQ(loop_->backend(), GetParam());
  }
  std::unique_ptr<EventLoop> loop_;
};

// Waits (bounded, 5 s) for a condition another thread makes true.
template <typename Condition>
bool Eventually(Condition condition) {
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < give_up) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

// A port on 127.0.0.1 that refuses connections for as long as this object
// lives: a socket is bound to it and never listens, so the kernel answers a
// SYN with RST. A port that was merely free a moment ago is no dead endpoint:
// a test running in parallel may bind it (or an outgoing connection take it)
// in between. Bound without SO_REUSEADDR/SO_REUSEPORT, so nobody else can.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot bind a loopback port to hold";
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~RefusingPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Parameter printer for backend-parameterized suites.
inline std::string BackendName(const ::testing::TestParamInfo<IoBackendKind>& info) {
  return info.param == IoBackendKind::kIoUring ? "io_uring" : "epoll";
}

}  // namespace capstan::net::testing
