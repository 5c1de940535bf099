// RetryBudget: retries (and hedged requests) may add at most `ratio` extra
// load on top of the original calls, measured over a sliding window, plus a
// small floor so a client with little traffic can still retry. When an
// endpoint set is failing, a retry storm cannot multiply the load on it.
//
//   if (budget.TryRetry()) { ... send again ... }   // else: fail the call
//
// Default: 10% of the calls in the last 10 s, plus 10 retries per second.
//
// Thread-safety: one thread (the owning loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

#include "base/clock.h"

namespace capstan::mesh {

struct RetryBudgetOptions {
  double ratio = 0.1;
  double min_retries_per_second = 10;
  std::chrono::seconds window{10};
};

class RetryBudget {
 public:
  explicit RetryBudget(RetryBudgetOptions options = {}, const Clock* clock = nullptr)
      : options_(options), clock_(clock != nullptr ? clock : RealClock::Get()) {}

  // Counts an original call (not a retry).
  void RecordCall();
  // Asks to send one retry or hedge; counts it when allowed.
  bool TryRetry();
  // What the window holds now (for /status and tests).
  int64_t calls_in_window();
  int64_t retries_in_window();

 private:
  struct Bucket {
    int64_t second;
    int64_t calls;
    int64_t retries;
  };
  Bucket& Current();

  RetryBudgetOptions options_;
  const Clock* clock_;
  std::deque<Bucket> buckets_;
};

}  // namespace capstan::mesh
