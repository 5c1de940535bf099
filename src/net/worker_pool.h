// WorkerPool: threads for work that blocks (a disk read, a library without
// an async API, a long computation), so the event loops never do. A
// coroutine hands the work over explicitly and resumes on its own loop with
// the result; there is no hidden scheduler that moves coroutines between
// threads.
//
//   net::WorkerPool pool({.threads = 4, .name = "disk"});
//   std::string text = co_await pool.Run(ctx.loop(), [&] { return ReadFile(path); });
//
// The work runs on a pool thread: it must not touch loop-owned state (it
// may read what the awaiting coroutine owns, which stays put while it
// waits). The queue is unbounded: what bounds it is the caller's own
// concurrency (an RPC server's limiter counts handlers waiting here as calls
// in flight, and sheds when they slow down).
//
// Thread-safety: Run from any loop thread; the destructor from the owner,
// after every coroutine waiting on the pool has resumed (it finishes the
// queued work first).
#pragma once

#include <condition_variable>
#include <coroutine>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "net/event_loop.h"
#include "net/task.h"

namespace capstan::net {

struct WorkerPoolOptions {
  int threads = 2;
  // Thread names are "<name>-<i>".
  std::string name = "worker";
};

class WorkerPool {
 public:
  explicit WorkerPool(WorkerPoolOptions options = {});
  // Runs what is queued, then joins the threads.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn() on a pool thread; the awaiting coroutine resumes on `loop`
  // (its own) with fn's result.
  template <typename Fn>
  Task<std::invoke_result_t<Fn&>> Run(EventLoop* loop, Fn fn) {
    using Result = std::invoke_result_t<Fn&>;
    if constexpr (std::is_void_v<Result>) {
      co_await Handoff{this, loop, [&fn] { fn(); }};
    } else {
      std::optional<Result> result;
      co_await Handoff{this, loop, [&fn, &result] { result.emplace(fn()); }};
      co_return std::move(*result);
    }
  }

  // Jobs waiting for a thread.
  size_t queued() const;
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  // Suspends the coroutine, runs the work on a pool thread, then posts the
  // coroutine's resumption back to its loop.
  struct Handoff {
    WorkerPool* pool;
    EventLoop* loop;
    absl::AnyInvocable<void()> work;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      pool->Submit([this, h]() mutable {
        work();
        loop->Post([h] { h.resume(); });
      });
    }
    void await_resume() const noexcept {}
  };

  void Submit(absl::AnyInvocable<void()> job);
  void WorkerMain();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void()>> jobs_;  // guarded by mu_
  bool stopping_ = false;                        // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace capstan::net
