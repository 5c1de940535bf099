// FdReadiness: waits, on a loop, for bare fds to become readable or
// writable — for code that does its own system calls on an fd the loop's
// engine does not own (the gateway's splice(2) relay, after
// Socket::Release handed it the connected fds).
//
// The fds join a private epoll set, edge-triggered for input, output and
// the peer's close; the loop waits for that set as for one fd (an
// FdWaiter: io_uring's poll or the epoll engine's one-shot entry), so it
// works the same on both engines and needs nothing of the engine's
// internals. A Wait resumes once any watched fd had a new edge since the
// previous Wait returned.
//
// Edge-triggered: the owner goes on with its system calls until each of
// them would block (EAGAIN) before it waits again; an edge that came
// between its last call and Wait is not lost (it stays in the set and the
// set is readable, so the wait ends at once).
//
//   auto ready = net::FdReadiness::Create(loop).value();
//   RETURN_IF_ERROR(ready->Watch(fd_a));
//   while (...) {
//     ... read/write/splice fd_a until EAGAIN ...
//     auto wait = ready->Wait();
//     co_await wait;
//   }
//   ready->Unwatch(fd_a);  // before closing fd_a
//
// Cost per wait: the engine's poll of the set (io_uring: inside the turn's
// one io_uring_enter; epoll: an epoll_ctl to add and one to remove) and an
// epoll_wait(0) that takes the set's edges.
//
// Thread-safety: loop thread only. Destroy only while no Wait is pending
// (Interrupt, then let the waiter resume).
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>

#include "base/status.h"
#include "net/event_loop.h"
#include "net/socket.h"

namespace capstan::net {

class FdReadiness {
 public:
  static absl::StatusOr<std::unique_ptr<FdReadiness>> Create(EventLoop* loop);
  // REQUIRES: no Wait pending.
  ~FdReadiness();
  FdReadiness(const FdReadiness&) = delete;
  FdReadiness& operator=(const FdReadiness&) = delete;

  // Adds `fd` (a socket or a pipe) for input, output and hang-up edges.
  absl::Status Watch(int fd);
  // Removes `fd`; call before closing it.
  void Unwatch(int fd);

  struct WaitAwaiter {
    FdReadiness* self;
    bool await_ready() const noexcept { return self->interrupted_; }
    void await_suspend(std::coroutine_handle<> h);
    // OK after an edge; CANCELLED after Interrupt (and from then on, at
    // once); another error when the engine could not wait.
    absl::Status await_resume();
  };
  // One waiter at a time.
  WaitAwaiter Wait() { return WaitAwaiter{this}; }
  // Ends a pending Wait (and every later one) with CANCELLED: the owner is
  // closing. The waiter resumes in a later turn.
  void Interrupt();

  // Waits that ended with an edge (for tests and counters).
  uint64_t wakeups() const { return wakeups_; }

 private:
  FdReadiness(EventLoop* loop, int epfd);
  static void OnSetReady(FdWaiter* waiter, int result);

  // The FdWaiter with its owner, for the callback's way back.
  struct SetWaiter : FdWaiter {
    SetWaiter(EventLoop* loop, int fd, FdReadiness* owner)
        : FdWaiter(loop, fd, &FdReadiness::OnSetReady), owner(owner) {}
    FdReadiness* owner;
  };

  EventLoop* loop_;
  int epfd_;
  SetWaiter waiter_;
  std::coroutine_handle<> resumer_;
  int result_ = 0;
  bool interrupted_ = false;
  uint64_t wakeups_ = 0;
};

}  // namespace capstan::net
