#include "net/event_loop.h"

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/io_backend.h"
#include "net/socket.h"
#include "net/splice_sender.h"

namespace capstan::net {

const char* IoBackendName(IoBackendKind kind) {
  switch (kind) {
    case IoBackendKind::kAuto:
      return "auto";
    case IoBackendKind::kIoUring:
      return "io_uring";
    case IoBackendKind::kEpoll:
      return "epoll";
  }
  return "?";
}

absl::StatusOr<IoBackendKind> ParseIoBackend(std::string_view name) {
  if (name == "auto") return IoBackendKind::kAuto;
  if (name == "io_uring" || name == "uring") return IoBackendKind::kIoUring;
  if (name == "epoll") return IoBackendKind::kEpoll;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown I/O backend '", std::string(name), "': use auto, io_uring or epoll"));
}

// ---- Timer

void Timer::Arm(EventLoop* loop, Clock::time_point deadline) {
  if (armed()) loop_->HeapRemove(this);
  loop_ = loop;
  deadline_ = deadline;
  loop_->HeapInsert(this);
}

void Timer::ArmAfter(EventLoop* loop, Clock::duration delay) {
  // Measured from now, not from the turn's start: a long turn must not make
  // short timers fire early.
  Arm(loop, Clock::now() + delay);
}

void Timer::Cancel() {
  if (armed()) loop_->HeapRemove(this);
}

// ---- EventLoop

EventLoop::EventLoop(IoBackendKind kind, bool splice_mapped)
    : backend_kind_(kind), splice_mapped_(splice_mapped), now_(Clock::now()) {
  thread_id_.store(std::this_thread::get_id());
}

EventLoop::~EventLoop() {
  // Coroutines still parked on this loop can never finish: destroy them
  // while the engine exists, so the sockets they hold detach from it.
  detached_.DestroyAll();
  io_.reset();
}

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const LoopOptions& options) {
  std::unique_ptr<EventLoop> loop;
  if (options.backend != IoBackendKind::kEpoll) {
    loop.reset(new EventLoop(IoBackendKind::kIoUring, options.splice_mapped));
    auto uring = NewUringBackend(options);
    if (uring.ok()) {
      loop->io_ = std::move(uring).value();
      return loop;
    }
    if (options.backend == IoBackendKind::kIoUring) return uring.status();
    CAPSTAN_LOG(info, "io_uring unavailable, using epoll", "reason", uring.status().ToString());
  }
  loop.reset(new EventLoop(IoBackendKind::kEpoll, options.splice_mapped));
  ASSIGN_OR_RETURN(loop->io_, NewEpollBackend());
  return loop;
}

SpliceSender* EventLoop::splice_sender() {
  if (!splice_sender_tried_) {
    splice_sender_tried_ = true;
    if (splice_mapped_) splice_sender_ = SpliceSender::Create();
  }
  return splice_sender_.get();
}

bool EventLoop::uses_provided_buffers() const { return io_->uses_provided_buffers(); }

void EventLoop::Post(absl::AnyInvocable<void() &&> fn) {
  // All of it under the lock the loop takes to run what was posted: the
  // loop cannot run `fn` — which may end with this loop being destroyed
  // (a call answered, its server shut down) — while this thread still
  // reads io_ to wake it.
  MutexLock lock(&post_mu_);
  posted_.push_back(std::move(fn));
  has_posted_.store(true, std::memory_order_seq_cst);
  // Pairs with the loop's store of sleeping_ then load of has_posted_: one
  // of the two sides sees the other, so the wake-up is never lost.
  if (sleeping_.load(std::memory_order_seq_cst)) io_->Wake();
}

void EventLoop::Spawn(Task<void> task) {
  if (InLoopThread()) {
    StartOwned(std::move(task));
    return;
  }
  Post([this, t = std::move(task)]() mutable { StartOwned(std::move(t)); });
}

void EventLoop::Stop() {
  stop_.store(true);
  io_->Wake();
}

void EventLoop::MarkForFlush(Socket* socket) { flush_.push_back(socket->shared_from_this()); }

void EventLoop::RunReady() {
  // Handles scheduled while running go to the next round of this same turn.
  while (!ready_.empty()) {
    running_.swap(ready_);
    for (std::coroutine_handle<> h : running_) h.resume();
    running_.clear();
  }
}

void EventLoop::RunPosted() {
  if (!has_posted_.load(std::memory_order_acquire)) return;
  {
    MutexLock lock(&post_mu_);
    posted_running_.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : posted_running_) std::move(fn)();
  posted_running_.clear();
}

void EventLoop::RunTurnEnd() {
  // What these add (or schedule) runs in a later turn: the wait below does
  // not block while anything is ready.
  turn_end_running_.swap(turn_end_);
  for (auto& fn : turn_end_running_) std::move(fn)();
  turn_end_running_.clear();
  RunReady();
}

void EventLoop::FlushSockets() {
  // The list holds references, so a socket released by its owner during the
  // turn still flushes (or, closed, does nothing) safely.
  for (size_t i = 0; i < flush_.size(); ++i) flush_[i]->Flush();
  flush_.clear();
}

void EventLoop::FireTimers() {
  now_ = Clock::now();
  while (!timers_.empty() && timers_.front()->deadline_ <= now_) {
    Timer* t = timers_.front();
    HeapRemove(t);
    t->on_fire_();  // may re-arm t or destroy it
  }
}

void EventLoop::Run() {
  thread_id_.store(std::this_thread::get_id());
  io_->OnLoopThread();
  while (!stop_.load(std::memory_order_relaxed)) {
    ++stats_.turns;
    RunPosted();
    RunReady();
    FireTimers();
    RunReady();
    RunTurnEnd();
    FlushSockets();
    std::chrono::nanoseconds timeout(-1);
    if (!ready_.empty() || !turn_end_.empty()) {
      timeout = std::chrono::nanoseconds(0);
    } else {
      sleeping_.store(true, std::memory_order_seq_cst);
      if (has_posted_.load(std::memory_order_seq_cst) || stop_.load()) {
        timeout = std::chrono::nanoseconds(0);
      } else if (!timers_.empty()) {
        timeout = std::max(std::chrono::nanoseconds(0),
                           std::chrono::duration_cast<std::chrono::nanoseconds>(
                               timers_.front()->deadline_ - Clock::now()));
      }
    }
    if (timeout.count() != 0) ++stats_.waits;
    io_->Wait(timeout);
    sleeping_.store(false, std::memory_order_relaxed);
    now_ = Clock::now();
  }
  // Output queued in the last turn still leaves, and sockets closed during
  // it get their cancelled I/O back (bounded: a peer cannot hold us here).
  auto give_up = Clock::now() + std::chrono::seconds(1);
  do {
    RunPosted();
    RunReady();
    RunTurnEnd();
    FlushSockets();
    io_->Wait(io_->busy_sockets() > 0 ? std::chrono::nanoseconds(std::chrono::milliseconds(1))
                                      : std::chrono::nanoseconds(0));
  } while (io_->busy_sockets() > 0 && Clock::now() < give_up);
  RunReady();
  stop_.store(false);
}

// ---- timer heap

void EventLoop::HeapInsert(Timer* t) {
  t->heap_index_ = timers_.size();
  timers_.push_back(t);
  HeapUp(t->heap_index_);
}

void EventLoop::HeapRemove(Timer* t) {
  size_t i = t->heap_index_;
  size_t last = timers_.size() - 1;
  if (i != last) {
    timers_[i] = timers_[last];
    timers_[i]->heap_index_ = i;
  }
  timers_.pop_back();
  t->heap_index_ = Timer::kNotArmed;
  if (i < timers_.size()) {
    HeapDown(i);
    HeapUp(i);
  }
}

void EventLoop::HeapUp(size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (timers_[parent]->deadline_ <= timers_[i]->deadline_) break;
    std::swap(timers_[parent], timers_[i]);
    timers_[parent]->heap_index_ = parent;
    timers_[i]->heap_index_ = i;
    i = parent;
  }
}

void EventLoop::HeapDown(size_t i) {
  size_t n = timers_.size();
  while (true) {
    size_t smallest = i;
    size_t l = 2 * i + 1, r = 2 * i + 2;
    if (l < n && timers_[l]->deadline_ < timers_[smallest]->deadline_) smallest = l;
    if (r < n && timers_[r]->deadline_ < timers_[smallest]->deadline_) smallest = r;
    if (smallest == i) break;
    std::swap(timers_[smallest], timers_[i]);
    timers_[smallest]->heap_index_ = smallest;
    timers_[i]->heap_index_ = i;
    i = smallest;
  }
}

}  // namespace capstan::net
