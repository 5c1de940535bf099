// WaitGroup: a coroutine waits until a count of tasks on the same loop have
// finished (Go's sync.WaitGroup, single-threaded).
//
//   net::WaitGroup done;
//   for (...) { done.Add(); loop->Spawn(Work(&done)); }   // Work calls done.Done()
//   co_await done.Wait();
//
// Thread-safety: one loop; Add, Done and Wait on its thread.
#pragma once

#include <coroutine>

#include "net/event_loop.h"

namespace capstan::net {

class WaitGroup {
 public:
  explicit WaitGroup(EventLoop* loop) : loop_(loop) {}
  void Add(int n = 1) { count_ += n; }
  void Done() {
    if (--count_ == 0 && waiter_) loop_->Schedule(std::exchange(waiter_, nullptr));
  }
  int count() const { return count_; }

  struct Awaiter {
    WaitGroup* group;
    bool await_ready() const noexcept { return group->count_ <= 0; }
    void await_suspend(std::coroutine_handle<> h) { group->waiter_ = h; }
    void await_resume() const noexcept {}
  };
  // One waiter at a time.
  Awaiter Wait() { return Awaiter{this}; }

 private:
  EventLoop* loop_;
  int count_ = 0;
  std::coroutine_handle<> waiter_;
};

}  // namespace capstan::net
