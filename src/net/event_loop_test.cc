#include "net/event_loop.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;

using EventLoopTest = testing::EngineTest;

Task<int> Add(int a, int b) { co_return a + b; }
Task<int> Twice(int a) {
  int x = co_await Add(a, 0);
  int y = co_await Add(0, a);
  co_return x + y;
}

TEST_P(EventLoopTest, TasksReturnValuesThroughAwait) {
  int result = 0;
  RunToCompletion(*loop_, [](int* out) -> Task<void> { *out = co_await Twice(21); }(&result));
  EXPECT_EQ(result, 42);
}

TEST_P(EventLoopTest, TimersFireInDeadlineOrderAndCancelledOnesNever) {
  std::vector<int> fired;
  EventLoop* loop = loop_.get();
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i : {5, 1, 4, 2, 3}) {
    timers.push_back(std::make_unique<Timer>([&fired, i] { fired.push_back(i); }));
  }
  RunToCompletion(*loop_,
                  [](EventLoop* loop, std::vector<std::unique_ptr<Timer>>& timers,
                     std::vector<int>& fired) -> Task<void> {
                    int order[] = {5, 1, 4, 2, 3};
                    for (int i = 0; i < 5; ++i)
                      timers[i]->ArmAfter(loop, std::chrono::milliseconds(order[i] * 3));
                    timers[2]->Cancel();  // the one for 4
                    // Re-arming moves a timer: 5 now fires first.
                    timers[0]->ArmAfter(loop, std::chrono::microseconds(100));
                    co_await loop->Sleep(std::chrono::milliseconds(30));
                  }(loop, timers, fired));
  EXPECT_EQ(fired, (std::vector<int>{5, 1, 2, 3}));
}

TEST_P(EventLoopTest, SleepNeverResumesEarly) {
  auto start = std::chrono::steady_clock::now();
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    co_await loop->Sleep(std::chrono::milliseconds(20));
  }(loop_.get()));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
}

TEST_P(EventLoopTest, PostsFromOtherThreadsRunOnTheLoopThread) {
  constexpr int kThreads = 4, kEach = 5000;
  std::atomic<int> ran{0};
  std::atomic<int> off_thread{0};
  EventLoop* loop = loop_.get();
  std::thread runner([loop] { loop->Run(); });
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        loop->Post([&, loop] {
          if (!loop->InLoopThread()) off_thread++;
          if (++ran == kThreads * kEach) loop->Stop();
        });
      }
    });
  }
  for (auto& t : posters) t.join();
  runner.join();
  EXPECT_EQ(ran.load(), kThreads * kEach);
  EXPECT_EQ(off_thread.load(), 0);
}

TEST_P(EventLoopTest, SpawnFromAnotherThreadStartsOnTheLoop) {
  EventLoop* loop = loop_.get();
  std::thread runner([loop] { loop->Run(); });
  std::atomic<bool> on_loop{false};
  loop->Spawn([](EventLoop* loop, std::atomic<bool>* on_loop) -> Task<void> {
    co_await loop->Yield();
    on_loop->store(loop->InLoopThread());
    loop->Stop();
  }(loop, &on_loop));
  runner.join();
  EXPECT_TRUE(on_loop.load());
}

TEST_P(EventLoopTest, AnIdleLoopBlocksInTheKernel) {
  RunToCompletion(*loop_, [](EventLoop* loop) -> Task<void> {
    for (int i = 0; i < 5; ++i) co_await loop->Sleep(std::chrono::milliseconds(2));
  }(loop_.get()));
  // Five sleeps need a handful of turns, not a spin.
  EXPECT_LT(loop_->stats().turns, 50u);
  EXPECT_GE(loop_->stats().waits, 5u);
}

INSTANTIATE_TEST_SUITE_P(Engines, EventLoopTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

TEST(IoBackendTest, ParsesNamesAndRejectsOthersWithAHint) {
  EXPECT_EQ(ParseIoBackend("epoll").value(), IoBackendKind::kEpoll);
  EXPECT_EQ(ParseIoBackend("io_uring").value(), IoBackendKind::kIoUring);
  auto bad = ParseIoBackend("kqueue");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("auto, io_uring or epoll"), std::string::npos);
}

}  // namespace
}  // namespace capstan::net
