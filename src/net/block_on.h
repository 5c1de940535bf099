// BlockOn: run a coroutine on a loop from another thread and wait for it.
// For tools, tests and the edges of a program; never call it on the loop's
// own thread (the loop could not run the task while its thread waits).
//
//   absl::StatusOr<Reply> r = net::BlockOn(loop, stub.Hello(request));
#pragma once

#include <future>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "net/event_loop.h"
#include "net/task.h"

namespace capstan::net {

template <typename T>
T BlockOn(EventLoop* loop, Task<T> task) {
  std::promise<T> result;
  std::future<T> future = result.get_future();
  loop->Post([loop, t = std::move(task), &result]() mutable {
    loop->StartOwned([](Task<T> t, std::promise<T>* out) -> Task<void> {
      out->set_value(co_await std::move(t));
    }(std::move(t), &result));
  });
  return future.get();
}

// Runs fn on the loop's thread and waits for it to return.
inline void RunOn(EventLoop* loop, absl::FunctionRef<void()> fn) {
  std::promise<void> done;
  loop->Post([fn, &done] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

// The same, returning what fn returns.
template <typename Fn>
requires(!std::is_void_v<std::invoke_result_t<Fn&>>) std::invoke_result_t<Fn&> RunOn(
    EventLoop* loop, Fn&& fn) {
  std::optional<std::invoke_result_t<Fn&>> result;
  RunOn(loop, [&] { result.emplace(fn()); });
  return std::move(*result);
}

inline void BlockOn(EventLoop* loop, Task<void> task) {
  std::promise<void> done;
  std::future<void> future = done.get_future();
  loop->Post([loop, t = std::move(task), &done]() mutable {
    loop->StartOwned([](Task<void> t, std::promise<void>* out) -> Task<void> {
      co_await std::move(t);
      out->set_value();
    }(std::move(t), &done));
  });
  future.get();
}

}  // namespace capstan::net
