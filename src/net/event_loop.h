// EventLoop: one thread's I/O and timer loop. Capstan runs one loop per core
// (see LoopGroup); every socket, timer and coroutine lives on exactly one
// loop and is touched only from that loop's thread. Post() is the only way
// in from another thread.
//
// I/O goes through io_uring when the kernel allows it (multishot accept and
// receive with a provided-buffer ring where the kernel has them) and through
// edge-triggered epoll otherwise; the choice is made at Create and both paths
// give the same behaviour.
//
// One turn of the loop: run every ready coroutine and posted function, flush
// the output of every socket written to during the turn (many responses, one
// send), then wait for I/O or the next timer. With io_uring the sends of a
// turn and the wait are one system call.
//
//   auto loop = net::EventLoop::Create({}).value();
//   loop->Spawn(Serve(*loop));
//   loop->Run();                       // until loop->Stop() from anywhere
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "base/mutex.h"
#include "base/status.h"
#include "net/task.h"

namespace capstan::net {

enum class IoBackendKind {
  kAuto,     // io_uring when the kernel and the sandbox allow it, else epoll
  kIoUring,  // fail Create when io_uring is unavailable
  kEpoll,
};
const char* IoBackendName(IoBackendKind kind);
// Parses "auto", "io_uring" or "epoll".
absl::StatusOr<IoBackendKind> ParseIoBackend(std::string_view name);

struct LoopOptions {
  IoBackendKind backend = IoBackendKind::kAuto;
  // io_uring submission queue size; completions queue is twice that.
  unsigned ring_entries = 1024;
  // Provided receive buffers shared by the loop's sockets (io_uring only):
  // count (a power of two) and size of each.
  unsigned recv_buffer_count = 512;
  unsigned recv_buffer_size = 16 * 1024;
  // Sockets send large slices of mapped blocks (Buffer::MappedCopy) through
  // a pipe, without copying them (net/splice_sender.h). Off: by copy, as
  // everything else.
  bool splice_mapped = true;
};

class IoBackend;
class Socket;
class EventLoop;
class SpliceSender;

// A timer on a loop: armed with a deadline, fires its callback once on the
// loop thread unless cancelled first. Embed it in the object it serves (no
// allocation per arm). Destroying an armed timer cancels it.
class Timer {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Timer(absl::AnyInvocable<void()> on_fire) : on_fire_(std::move(on_fire)) {}
  ~Timer() { Cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // REQUIRES: on loop's thread. Re-arming an armed timer moves its deadline.
  void Arm(EventLoop* loop, Clock::time_point deadline);
  void ArmAfter(EventLoop* loop, Clock::duration delay);
  void Cancel();
  bool armed() const { return heap_index_ != kNotArmed; }
  Clock::time_point deadline() const { return deadline_; }

 private:
  friend class EventLoop;
  static constexpr size_t kNotArmed = ~size_t{0};
  absl::AnyInvocable<void()> on_fire_;
  EventLoop* loop_ = nullptr;
  Clock::time_point deadline_{};
  size_t heap_index_ = kNotArmed;
};

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;

  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const LoopOptions& options);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  IoBackendKind backend() const { return backend_kind_; }
  // True when receives use the kernel's provided-buffer ring (io_uring only).
  bool uses_provided_buffers() const;

  // Runs turns until Stop(). The calling thread becomes the loop's thread.
  void Run();
  // Any thread. Run returns after the current turn.
  void Stop();
  // Any thread: runs fn on the loop thread in a later turn.
  void Post(absl::AnyInvocable<void() &&> fn);
  // Any thread: starts the task on the loop thread (now if called there).
  // A spawned task still parked when the loop is destroyed is destroyed
  // with it (its frame's destructors run).
  void Spawn(Task<void> task);
  // Loop thread: starts the task now, owned by the loop as Spawn's are.
  void StartOwned(Task<void> task) { StartDetached(std::move(task), &detached_); }
  bool InLoopThread() const {
    return std::this_thread::get_id() == thread_id_.load(std::memory_order_relaxed);
  }

  // Loop thread only. Resumes h in this turn or the next, never inside the
  // caller's stack (so a completion handler never re-enters its owner).
  void Schedule(std::coroutine_handle<> h) { ready_.push_back(h); }
  // The time at the start of this turn (cheap; advances every turn).
  Clock::time_point now() const { return now_; }

  // co_await loop.Sleep(d): resumes after d on the loop thread.
  struct SleepAwaiter {
    EventLoop* loop;
    Clock::duration delay;
    std::coroutine_handle<> waiter;
    Timer timer{[this] { loop->Schedule(waiter); }};
    bool await_ready() const noexcept { return delay <= Clock::duration::zero(); }
    void await_suspend(std::coroutine_handle<> h) {
      waiter = h;
      timer.ArmAfter(loop, delay);
    }
    void await_resume() const noexcept {}
  };
  SleepAwaiter Sleep(Clock::duration delay) { return SleepAwaiter{this, delay, {}}; }

  // co_await loop.Yield(): lets everything else that is ready run first.
  struct YieldAwaiter {
    EventLoop* loop;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const { loop->Schedule(h); }
    void await_resume() const noexcept {}
  };
  YieldAwaiter Yield() { return YieldAwaiter{this}; }

  // Loop thread only: runs fn once at the end of this turn, after every
  // ready coroutine and before the turn's output is flushed (so work that
  // the turn's requests share, e.g. one log round for all their writes, runs
  // once and its answers leave with the turn).
  void AtTurnEnd(absl::AnyInvocable<void() &&> fn) { turn_end_.push_back(std::move(fn)); }
  // Sockets with output written this turn; flushed before the loop waits.
  void MarkForFlush(Socket* socket);
  IoBackend* io() { return io_.get(); }
  // The loop's sender of mapped slices (made on first use); null when the
  // path is off or unavailable (net/splice_sender.h). Loop thread only.
  SpliceSender* splice_sender();

  // Counters for tests and the status page (loop thread).
  struct Stats {
    uint64_t turns = 0;
    uint64_t waits = 0;  // turns that blocked in the kernel
  };
  const Stats& stats() const { return stats_; }

 private:
  friend class Timer;
  EventLoop(IoBackendKind kind, bool splice_mapped);

  void RunReady();
  void RunPosted();
  void FireTimers();
  void FlushSockets();
  void RunTurnEnd();

  // Timer heap (min-heap by deadline), intrusive through Timer::heap_index_.
  void HeapInsert(Timer* t);
  void HeapRemove(Timer* t);
  void HeapUp(size_t i);
  void HeapDown(size_t i);

  IoBackendKind backend_kind_;
  std::unique_ptr<IoBackend> io_;
  bool splice_mapped_;
  bool splice_sender_tried_ = false;
  std::unique_ptr<SpliceSender> splice_sender_;
  // Declared after io_: destroyed first, while the engine still exists for
  // the sockets and timers the parked frames release.
  DetachedList detached_;
  // The creating thread until Run starts, then the running one (atomic: a
  // group starts Run on its own thread while others may already Post).
  std::atomic<std::thread::id> thread_id_;
  Clock::time_point now_;
  std::vector<std::coroutine_handle<>> ready_;
  std::vector<std::coroutine_handle<>> running_;
  std::vector<Timer*> timers_;
  std::vector<std::shared_ptr<Socket>> flush_;
  std::vector<absl::AnyInvocable<void() &&>> turn_end_;
  std::vector<absl::AnyInvocable<void() &&>> turn_end_running_;
  Stats stats_;

  Mutex post_mu_;
  std::vector<absl::AnyInvocable<void() &&>> posted_ ABSL_GUARDED_BY(post_mu_);
  std::vector<absl::AnyInvocable<void() &&>> posted_running_;
  std::atomic<bool> has_posted_{false};
  // Set while the loop may block in the kernel; Post wakes it only then.
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
};

}  // namespace capstan::net
