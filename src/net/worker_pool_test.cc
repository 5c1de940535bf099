#include "net/worker_pool.h"

#include <atomic>
#include <latch>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "net/test_util.h"

namespace capstan::net {
namespace {

using testing::BackendName;
using testing::RunToCompletion;

using WorkerPoolTest = testing::EngineTest;

// While a job blocks on a pool thread, the loop keeps running other
// coroutines; the waiting coroutine resumes on the loop with the result.
TEST_P(WorkerPoolTest, BlockingWorkRunsOffTheLoopAndResumesOnIt) {
  WorkerPool pool({.threads = 2, .name = "test"});
  std::latch release(1);
  std::atomic<bool> job_ran_on_loop{true};
  bool resumed_on_loop = false;
  int ticks_while_blocked = 0;
  std::string result;
  EventLoop* loop = loop_.get();
  RunToCompletion(*loop, [&]() -> Task<void> {
    // A coroutine that must keep running while the job blocks, and is the
    // one to let the job finish.
    loop->Spawn([](EventLoop* loop, int* ticks, std::latch* release) -> Task<void> {
      for (int i = 0; i < 5; ++i) {
        co_await loop->Yield();
        ++*ticks;
      }
      release->count_down();
    }(loop, &ticks_while_blocked, &release));
    result = co_await pool.Run(loop, [&] {
      job_ran_on_loop = loop->InLoopThread();
      release.wait();  // blocks this pool thread, not the loop
      return std::string("done");
    });
    resumed_on_loop = loop->InLoopThread();
  }());
  EXPECT_EQ(result, "done");
  EXPECT_FALSE(job_ran_on_loop.load());
  EXPECT_TRUE(resumed_on_loop);
  EXPECT_EQ(ticks_while_blocked, 5);
}

TEST_P(WorkerPoolTest, ManyJobsRunInParallelAndVoidJobsWork) {
  WorkerPool pool({.threads = 2});
  EXPECT_EQ(pool.threads(), 2);
  // Two jobs that each wait for the other can only finish on two threads.
  std::latch both(2);
  std::atomic<int> done{0};
  EventLoop* loop = loop_.get();
  RunToCompletion(*loop, [&]() -> Task<void> {
    auto job = [&](WorkerPool* p) -> Task<void> {
      co_await p->Run(loop, [&] {
        both.arrive_and_wait();
        done++;
      });
    };
    Task<void> first = job(&pool);
    loop->Spawn(job(&pool));
    co_await std::move(first);
    while (done.load() < 2) co_await loop->Yield();
  }());
  EXPECT_EQ(done.load(), 2);
  EXPECT_EQ(pool.queued(), 0u);
}

// Jobs beyond the threads wait in the queue, and all of them run.
TEST_P(WorkerPoolTest, JobsBeyondTheThreadsQueueAndAllRun) {
  WorkerPool pool({.threads = 1});
  std::latch hold(1);
  std::atomic<int> ran{0};
  std::atomic<bool> first_running{false};
  size_t queued_seen = 0;
  EventLoop* loop = loop_.get();
  RunToCompletion(*loop, [&]() -> Task<void> {
    auto job = [&](bool first) -> Task<void> {
      co_await pool.Run(loop, [&, first] {
        if (first) {
          first_running = true;
          hold.wait();
        }
        ran++;
      });
    };
    loop->Spawn(job(true));
    for (int i = 0; i < 9; ++i) loop->Spawn(job(false));
    // Bounded: the first soon blocks the only thread, the nine queue.
    for (int i = 0; i < 1'000'000 && !(first_running.load() && pool.queued() == 9); ++i) {
      co_await loop->Yield();
    }
    queued_seen = pool.queued();
    hold.count_down();
    for (int i = 0; i < 1'000'000 && ran.load() < 10; ++i) co_await loop->Yield();
  }());
  EXPECT_EQ(queued_seen, 9u);
  EXPECT_EQ(ran.load(), 10);
}

INSTANTIATE_TEST_SUITE_P(Engines, WorkerPoolTest,
                         ::testing::Values(IoBackendKind::kIoUring, IoBackendKind::kEpoll),
                         BackendName);

}  // namespace
}  // namespace capstan::net
