// RelayPair on both engines over real loopback TCP connections: `auto`
// (copy first, splice after `splice_after` bytes) hands a pair over at the
// threshold and not below it, and no byte is lost or reordered across the
// hand-over in either direction, half-close included. The test's client
// and origin ends are blocking sockets driven by threads; the relay owns
// the proxy's two ends.
#include "gateway/l4_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "gateway/l4_test_util.h"
#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::gateway {
namespace {

using net::IoBackendKind;
using net::testing::RunToCompletion;

constexpr size_t kThreshold = 64 << 10;

using l4_test::MakePair;
using l4_test::RandomBytes;
using l4_test::SendAll;
using l4_test::TcpPair;

// Exactly n bytes (fewer if the peer ends or the 10 s bound passes).
std::string ReadExactly(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, out.data() + got, n - got);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

// Until the peer's FIN (or an error / the 10 s bound).
std::string ReadToEnd(int fd) {
  std::string out;
  std::string buf(64 << 10, '\0');
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) out.append(buf.data(), static_cast<size_t>(n));
  return out;
}

// A flag the loop raises and test threads wait for (bounded).
class Signal {
 public:
  void Raise() {
    std::lock_guard<std::mutex> lock(mu_);
    raised_ = true;
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return raised_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool raised_ = false;
};

class L4RelayTest : public net::testing::EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (loop_ == nullptr) return;
    client_ = MakePair();
    origin_ = MakePair();
    ASSERT_GE(client_.proxy, 0);
    ASSERT_GE(origin_.proxy, 0);
  }
  void TearDown() override {
    // The relay closed the proxy's ends.
    for (int fd : {client_.app, origin_.app}) {
      if (fd >= 0) close(fd);
    }
  }

  // Runs RelayPair over the two proxy ends until it ends. `handed_over`
  // (when given) is raised once the splice relay owns the fds: a loop-side
  // watcher looks at each turn's end.
  void Relay(const RelayPolicy& policy, Signal* handed_over = nullptr) {
    RunToCompletion(
        *loop_, [](L4RelayTest* t, RelayPolicy policy, Signal* handed_over) -> net::Task<void> {
          net::EventLoop* loop = t->loop_.get();
          t->pair_.client =
              net::Socket::Adopt(loop, t->client_.proxy, RelaySocketSetup(policy.buffer_bytes));
          t->pair_.upstream =
              net::Socket::Adopt(loop, t->origin_.proxy, RelaySocketSetup(policy.buffer_bytes));
          if (handed_over != nullptr) {
            loop->StartOwned([](net::EventLoop* loop, RelayedPair* pair, bool* done,
                                Signal* signal) -> net::Task<void> {
              // Bounded: the relay ends within the test's 10 s socket bounds.
              for (int i = 0; i < 20000 && !*done; ++i) {
                if (pair->relay != nullptr) {
                  signal->Raise();
                  co_return;
                }
                auto tick = loop->Sleep(std::chrono::milliseconds(1));
                co_await tick;
              }
            }(loop, &t->pair_, &t->relay_done_, handed_over));
          }
          auto relay = RelayPair(loop, &t->pipes_, policy, t->counters_, &t->pair_);
          co_await relay;
          // The watcher, if still waiting, only points at the fixture: it
          // stays asleep on the stopped loop and goes with it.
          t->relay_done_ = true;
        }(this, policy, handed_over));
  }

  RelayPolicy AutoPolicy() {
    RelayPolicy policy;
    policy.mode = RelayPolicy::Mode::kSpliceAfter;
    policy.splice_after = kThreshold;
    policy.buffer_bytes = 64 << 10;
    policy.splice_pipe_bytes = 64 << 10;
    return policy;
  }

  TcpPair client_, origin_;
  RelayedPair pair_;
  bool relay_done_ = false;
  PipePool pipes_;
  metrics::Counter in_, out_, spliced_, fallbacks_;
  RelayCounters counters_{&in_, &out_, &spliced_, &fallbacks_};
};

TEST_P(L4RelayTest, AutoHandsOverAtTheThresholdAndBothDirectionsAndHalfCloseCrossIt) {
  // Before the hand-over: 40 KiB up, then 24 KiB down: exactly the
  // threshold, so the second direction's last piece triggers it. Nothing
  // moves until the splice relay owns the fds; then 1 MiB up and the
  // client's FIN (a half-close through the splice path while the other
  // direction is open), and 2 MiB down and the origin's FIN.
  const std::string up1 = RandomBytes(40 << 10, 1), up2 = RandomBytes(1 << 20, 2);
  const std::string down1 = RandomBytes(kThreshold - up1.size(), 3);
  const std::string down2 = RandomBytes(2 << 20, 4);
  Signal handed_over;
  std::string client_got, origin_got;
  bool client_waited = false, origin_waited = false;
  std::thread client([&] {
    SendAll(client_.app, up1);
    client_got = ReadExactly(client_.app, down1.size());
    client_waited = handed_over.Wait();
    SendAll(client_.app, up2);
    shutdown(client_.app, SHUT_WR);
    client_got += ReadToEnd(client_.app);
  });
  std::thread origin([&] {
    origin_got = ReadExactly(origin_.app, up1.size());
    SendAll(origin_.app, down1);
    origin_waited = handed_over.Wait();
    origin_got += ReadToEnd(origin_.app);  // up2 and the client's FIN
    SendAll(origin_.app, down2);
    shutdown(origin_.app, SHUT_WR);
  });
  Relay(AutoPolicy(), &handed_over);
  client.join();
  origin.join();
  EXPECT_TRUE(client_waited && origin_waited) << "the hand-over did not happen";
  EXPECT_TRUE(pair_.spliced);
  EXPECT_EQ(spliced_.Value(), 1u);
  EXPECT_EQ(fallbacks_.Value(), 0u);
  ASSERT_EQ(origin_got.size(), up1.size() + up2.size());
  EXPECT_TRUE(origin_got == up1 + up2) << "client → upstream bytes differ";
  ASSERT_EQ(client_got.size(), down1.size() + down2.size());
  EXPECT_TRUE(client_got == down1 + down2) << "upstream → client bytes differ";
  EXPECT_EQ(in_.Value(), up1.size() + up2.size());
  EXPECT_EQ(out_.Value(), down1.size() + down2.size());
}

TEST_P(L4RelayTest, AutoStaysOnTheCopyPathOneByteBelowTheThreshold) {
  // A request and its answer, one byte short of the threshold together,
  // then both FINs: never spliced, nothing counted as a fallback.
  const std::string request = RandomBytes(40 << 10, 5);
  const std::string answer = RandomBytes(kThreshold - request.size() - 1, 6);
  std::string client_got, origin_got;
  std::thread client([&] {
    SendAll(client_.app, request);
    shutdown(client_.app, SHUT_WR);
    client_got = ReadToEnd(client_.app);
  });
  std::thread origin([&] {
    origin_got = ReadToEnd(origin_.app);
    SendAll(origin_.app, answer);
    shutdown(origin_.app, SHUT_WR);
  });
  Relay(AutoPolicy());
  client.join();
  origin.join();
  EXPECT_FALSE(pair_.spliced);
  EXPECT_EQ(spliced_.Value(), 0u);
  EXPECT_EQ(fallbacks_.Value(), 0u);
  EXPECT_EQ(pipes_.spare(), 0u) << "no pipe should have been taken";
  EXPECT_TRUE(origin_got == request);
  EXPECT_TRUE(client_got == answer);
}

TEST_P(L4RelayTest, ADirectionThatEndedBeforeTheThresholdLeavesTheOtherCopying) {
  // The client's request and FIN come first (that direction ends on the
  // copy path); the answer then crosses the threshold alone: it pauses and
  // goes on copying (a half-closed pair is not handed over), to its end.
  const std::string request = RandomBytes(100, 7);
  const std::string answer = RandomBytes(1 << 20, 8);
  std::string client_got, origin_got;
  std::thread client([&] {
    SendAll(client_.app, request);
    shutdown(client_.app, SHUT_WR);
    client_got = ReadToEnd(client_.app);
  });
  std::thread origin([&] {
    origin_got = ReadToEnd(origin_.app);
    SendAll(origin_.app, answer);
    shutdown(origin_.app, SHUT_WR);
  });
  Relay(AutoPolicy());
  client.join();
  origin.join();
  EXPECT_FALSE(pair_.spliced);
  EXPECT_EQ(fallbacks_.Value(), 0u);
  EXPECT_TRUE(origin_got == request);
  ASSERT_EQ(client_got.size(), answer.size());
  EXPECT_TRUE(client_got == answer);
}

TEST_P(L4RelayTest, BothDirectionsStreamingAcrossTheHandOverLoseNothing) {
  // Both sides send megabytes at once and end with a FIN: the threshold
  // is crossed while bytes keep coming both ways (what a long transfer
  // under `auto` looks like); every byte arrives once and in order.
  const std::string up = RandomBytes(4 << 20, 9), down = RandomBytes(3 << 20, 10);
  std::string client_got, origin_got;
  std::thread client_sender([&] {
    SendAll(client_.app, up);
    shutdown(client_.app, SHUT_WR);
  });
  std::thread client_reader([&] { client_got = ReadToEnd(client_.app); });
  std::thread origin_sender([&] {
    SendAll(origin_.app, down);
    shutdown(origin_.app, SHUT_WR);
  });
  std::thread origin_reader([&] { origin_got = ReadToEnd(origin_.app); });
  Relay(AutoPolicy());
  for (std::thread* t : {&client_sender, &client_reader, &origin_sender, &origin_reader}) {
    t->join();
  }
  ASSERT_EQ(origin_got.size(), up.size());
  EXPECT_TRUE(origin_got == up) << "client → upstream bytes differ";
  ASSERT_EQ(client_got.size(), down.size());
  EXPECT_TRUE(client_got == down) << "upstream → client bytes differ";
  // The sockets stopped receiving for the hand-over, so the streams in
  // flight did not keep them busy: it went through (and neither FIN could
  // come before it: each follows megabytes the paused pair holds back).
  EXPECT_TRUE(pair_.spliced);
  EXPECT_EQ(spliced_.Value(), 1u);
  EXPECT_EQ(fallbacks_.Value(), 0u);
  EXPECT_EQ(in_.Value(), up.size());
  EXPECT_EQ(out_.Value(), down.size());
}

TEST_P(L4RelayTest, CopyNeverSplices) {
  RelayPolicy policy = AutoPolicy();
  policy.mode = RelayPolicy::Mode::kCopy;
  const std::string up = RandomBytes(1 << 20, 11);
  std::string origin_got;
  std::thread client([&] {
    SendAll(client_.app, up);
    shutdown(client_.app, SHUT_WR);
    ReadToEnd(client_.app);
  });
  std::thread origin([&] {
    origin_got = ReadToEnd(origin_.app);
    shutdown(origin_.app, SHUT_WR);
  });
  Relay(policy);
  client.join();
  origin.join();
  EXPECT_FALSE(pair_.spliced);
  EXPECT_EQ(spliced_.Value() + fallbacks_.Value(), 0u);
  EXPECT_TRUE(origin_got == up);
}

INSTANTIATE_TEST_SUITE_P(Engines, L4RelayTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         net::testing::BackendName);

}  // namespace
}  // namespace capstan::gateway
