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

}  // namespace internal

template <typename T>
class [[nodiscard]] Task {
 public:
  struct promise_type : internal::PromiseBase {
    std::optional<T> value;
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    template <typename U>
    void return_value(U&& v) {
      value.emplace(std::forward<U>(v));
    }
  };

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~Task() { Reset(); }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    handle_.promise().continuation = awaiter;
    return handle_;
  }
  T await_resume() { return std::move(*handle_.promise().value); }

  std::coroutine_handle<promise_type> Release() { return std::exchange(handle_, nullptr); }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : handle_(h) {}
  void Reset() {
    if (handle_) handle_.destroy();
    handle_ = nullptr;
  }
  std::coroutine_handle<promise_type> handle_;
};

template <>
class [[nodiscard]] Task<void> {
 public:
  struct promise_type : internal::PromiseBase {
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    void return_void() const noexcept {}
  };

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~Task() { Reset(); }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    handle_.promise().continuation = awaiter;
    return handle_;
  }
  void await_resume() const noexcept {}

  std::coroutine_handle<promise_type> Release() { return std::exchange(handle_, nullptr); }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : handle_(h) {}
  void Reset() {
    if (handle_) handle_.destroy();
    handle_ = nullptr;
  }
  std::coroutine_handle<promise_type> handle_;
};

namespace internal {

// A self-owning coroutine that runs a Task to completion and frees itself.
struct Detached {
  struct promise_type {
    Detached get_return_object() const noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
  };
};

inline Detached RunDetached(Task<void> task) { co_await std::move(task); }

}  // namespace internal

// Starts `task` now, on the calling thread, and lets it finish on its own.
// Use EventLoop::Spawn to start it on a loop from elsewhere.
inline void StartDetached(Task<void> task) { internal::RunDetached(std::move(task)); }

}  // namespace capstan::net
