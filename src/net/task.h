// Task<T>: the coroutine type of Capstan's runtime. A Task is lazy: it starts
// when awaited (or when handed to EventLoop::Spawn) and resumes its awaiter
// directly when it finishes (symmetric transfer, no trip through the loop).
//
//   net::Task<int> Add(int a, int b) { co_return a + b; }
//   net::Task<void> Run() { int x = co_await Add(1, 2); ... }
//
// A Task owns its coroutine frame: destroying an unstarted or finished Task
// frees it. Destroying a Task that is suspended in the middle of its body is
// a bug (its awaiter would never resume); Spawn'ed tasks own themselves.
//
// Exceptions are not part of the runtime's contract: a coroutine that throws
// terminates the process.
#pragma once

#include <coroutine>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace capstan::net {

template <typename T>
class Task;

namespace internal {

// Resumes whoever awaited the finished task, or returns to the resumer.
struct FinalAwaiter {
  bool await_ready() const noexcept { return false; }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) const noexcept {
    std::coroutine_handle<> next = h.promise().continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() const noexcept {}
};

struct PromiseBase {
  std::coroutine_handle<> continuation;
  std::suspend_always initial_suspend() const noexcept { return {}; }
  FinalAwaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() const noexcept { std::terminate(); }
};

// What every Task shares: ownership of the frame and starting it on await.
template <typename Promise>
class TaskBase {
 public:
  TaskBase(TaskBase&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  TaskBase& operator=(TaskBase&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~TaskBase() { Reset(); }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    handle_.promise().continuation = awaiter;
    return handle_;
  }
  std::coroutine_handle<Promise> Release() { return std::exchange(handle_, nullptr); }

 protected:
  explicit TaskBase(std::coroutine_handle<Promise> h) : handle_(h) {}
  void Reset() {
    if (handle_) handle_.destroy();
    handle_ = nullptr;
  }
  std::coroutine_handle<Promise> handle_;
};

template <typename T>
struct ValuePromise;
struct VoidPromise;

}  // namespace internal

template <typename T>
class [[nodiscard]] Task : public internal::TaskBase<internal::ValuePromise<T>> {
 public:
  using promise_type = internal::ValuePromise<T>;
  explicit Task(std::coroutine_handle<promise_type> h) : internal::TaskBase<promise_type>(h) {}
  T await_resume() { return std::move(*this->handle_.promise().value); }
};

template <>
class [[nodiscard]] Task<void> : public internal::TaskBase<internal::VoidPromise> {
 public:
  using promise_type = internal::VoidPromise;
  explicit Task(std::coroutine_handle<promise_type> h) : internal::TaskBase<promise_type>(h) {}
  void await_resume() const noexcept {}
};

namespace internal {

template <typename T>
struct ValuePromise : PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept {
    return Task<T>(std::coroutine_handle<ValuePromise>::from_promise(*this));
  }
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};

struct VoidPromise : PromiseBase {
  Task<void> get_return_object() noexcept {
    return Task<void>(std::coroutine_handle<VoidPromise>::from_promise(*this));
  }
  void return_void() const noexcept {}
};

}  // namespace internal

// Coroutines started with StartDetached and still running, so their owner
// (an EventLoop) can destroy the ones parked forever when it goes away.
class DetachedList {
 public:
  struct Node {
    Node* prev = nullptr;
    Node* next = nullptr;
    std::coroutine_handle<> handle;
  };
  DetachedList() { head_.prev = head_.next = &head_; }
  DetachedList(const DetachedList&) = delete;
  DetachedList& operator=(const DetachedList&) = delete;
  ~DetachedList() { DestroyAll(); }

  void Link(Node* n) {
    n->next = head_.next;
    n->prev = &head_;
    head_.next->prev = n;
    head_.next = n;
  }
  static void Unlink(Node* n) {
    if (n->next == nullptr) return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
  bool empty() const { return head_.next == &head_; }
  // Destroys every coroutine still parked: their frames' destructors run
  // (sockets, timers and buffers they hold are released).
  void DestroyAll() {
    while (!empty()) {
      Node* n = head_.next;
      Unlink(n);
      n->handle.destroy();
    }
  }

 private:
  Node head_;
};

namespace internal {

// A self-owning coroutine that runs a Task to completion and frees itself.
struct Detached {
  struct promise_type {
    promise_type(Task<void>&, DetachedList* owner) : owner(owner) {
      node.handle = std::coroutine_handle<promise_type>::from_promise(*this);
      if (owner != nullptr) owner->Link(&node);
    }
    ~promise_type() { DetachedList::Unlink(&node); }
    Detached get_return_object() const noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
    DetachedList* owner;
    DetachedList::Node node;
  };
};

inline Detached RunDetached(Task<void> task, DetachedList* owner) { co_await std::move(task); }

}  // namespace internal

// Starts `task` now, on the calling thread, and lets it finish on its own.
// With an owner, a task still parked when the owner is destroyed is
// destroyed with it. Use EventLoop::Spawn to start it on a loop from
// elsewhere.
inline void StartDetached(Task<void> task, DetachedList* owner = nullptr) {
  internal::RunDetached(std::move(task), owner);
}

}  // namespace capstan::net
