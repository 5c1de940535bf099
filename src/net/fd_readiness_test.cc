// FdReadiness on both engines: edges of bare fds wake the waiter, an edge
// that came before the wait is not lost, Interrupt ends a wait.
#include "net/fd_readiness.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;

class FdReadinessTest : public testing::EngineTest {
 protected:
  void SetUp() override {
    testing::EngineTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds_), 0);
  }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }
  int fds_[2] = {-1, -1};
};

TEST_P(FdReadinessTest, BytesWrittenBeforeTheWaitStillEndIt) {
  auto ready = FdReadiness::Create(loop_.get());
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_TRUE((*ready)->Watch(fds_[0]).ok());
  char buf[16];
  // Take the first (writable) edge, then a byte arrives before Wait.
  RunToCompletion(*loop_, [](FdReadiness* r, int peer) -> Task<void> {
    auto first = r->Wait();
    EXPECT_TRUE((co_await first).ok());
    EXPECT_EQ(write(peer, "x", 1), 1);
    auto second = r->Wait();
    EXPECT_TRUE((co_await second).ok());
  }(ready->get(), fds_[1]));
  EXPECT_EQ(read(fds_[0], buf, sizeof(buf)), 1);
  EXPECT_EQ((*ready)->wakeups(), 2u);
  (*ready)->Unwatch(fds_[0]);
}

TEST_P(FdReadinessTest, ASocketThatCouldNotTakeMoreWakesWhenItCan) {
  auto ready = FdReadiness::Create(loop_.get());
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_TRUE((*ready)->Watch(fds_[0]).ok());
  // Fill fds_[0]'s send side to EAGAIN; a timer on the loop then drains the
  // peer: the output edge must end the wait.
  std::string chunk(65536, 'a');
  size_t written = 0;
  while (true) {
    ssize_t n = write(fds_[0], chunk.data(), chunk.size());
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  ASSERT_EQ(errno, EAGAIN);
  size_t drained = 0;
  Timer drain([&] {
    char buf[65536];
    ssize_t n;
    while ((n = read(fds_[1], buf, sizeof(buf))) > 0) drained += static_cast<size_t>(n);
  });
  RunToCompletion(*loop_, [](FdReadiness* r, Timer* drain, EventLoop* loop) -> Task<void> {
    // The edge of Watch (writable then) is stale: the set checks what is
    // still true, so only the drain can end this wait.
    drain->ArmAfter(loop, std::chrono::milliseconds(1));
    auto wait = r->Wait();
    EXPECT_TRUE((co_await wait).ok());
  }(ready->get(), &drain, loop_.get()));
  EXPECT_EQ(drained, written);
  EXPECT_GT(write(fds_[0], "b", 1), 0);
  (*ready)->Unwatch(fds_[0]);
}

TEST_P(FdReadinessTest, InterruptEndsAWaitAndEveryLaterOne) {
  auto ready = FdReadiness::Create(loop_.get());
  ASSERT_TRUE(ready.ok()) << ready.status();
  // Nothing watched: only Interrupt can end the wait.
  Timer interrupt([r = ready->get()] { r->Interrupt(); });
  RunToCompletion(*loop_, [](FdReadiness* r, Timer* interrupt, EventLoop* loop) -> Task<void> {
    interrupt->ArmAfter(loop, std::chrono::milliseconds(1));
    auto wait = r->Wait();
    absl::Status st = co_await wait;
    EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
    auto again = r->Wait();
    st = co_await again;
    EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
  }(ready->get(), &interrupt, loop_.get()));
  EXPECT_EQ((*ready)->wakeups(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, FdReadinessTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
