// CircuitBreaker: stops sending calls to an endpoint that keeps failing, then
// probes it before trusting it again.
//
//   closed ──(consecutive failures >= N, or error rate >= R over >= M calls
//             in the window)──> open ──(open_duration passes)──> half-open
//   half-open ──(probe_successes probes succeed)──> closed
//   half-open ──(a probe fails)──> open, with open_duration doubled (up to
//             max_open_duration)
//
// Only failures that say something about the endpoint count (UNAVAILABLE,
// DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED): an application
// error like NOT_FOUND is a healthy answer. The caller decides which, and
// passes a Clock so tests drive time.
//
// Thread-safety: one thread (the owning loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

#include "base/clock.h"

namespace capstan::mesh {

struct CircuitBreakerOptions {
  int consecutive_failures = 5;
  double error_rate = 0.5;
  int min_calls_for_rate = 20;
  std::chrono::milliseconds window{10000};
  std::chrono::milliseconds open_duration{1000};
  std::chrono::milliseconds max_open_duration{30000};
  int probes = 1;           // calls let through at once while half-open
  int probe_successes = 1;  // successes needed to close
};

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  explicit CircuitBreaker(CircuitBreakerOptions options = {}, const Clock* clock = nullptr)
      : options_(options), clock_(clock != nullptr ? clock : RealClock::Get()) {}

  // May a call go out now? In half-open, a true answer reserves a probe
  // slot: the call's outcome must be recorded.
  bool Allow();
  void RecordSuccess();
  void RecordFailure();
  // A call let through ended without a verdict (cancelled because another
  // copy of a hedged call answered first): frees its probe slot.
  void RecordAbandoned();
  State state();  // (may move open -> half-open when the time has come)
  // New settings (a policy update): the state is kept, the next decisions
  // and transitions use them.
  void set_options(const CircuitBreakerOptions& options) { options_ = options; }
  static const char* StateName(State s);

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  void Open(TimePoint now);
  void Trim(TimePoint now);

  CircuitBreakerOptions options_;
  const Clock* clock_;
  State state_ = State::kClosed;
  int consecutive_failures_ = 0;
  // Outcomes in the window, per second: {second, calls, failures}.
  struct Bucket {
    int64_t second;
    int calls;
    int failures;
  };
  std::deque<Bucket> buckets_;
  TimePoint open_until_{};
  std::chrono::milliseconds current_open_{0};
  int probes_in_flight_ = 0;
  int probe_successes_ = 0;
};

}  // namespace capstan::mesh
