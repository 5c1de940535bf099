// AdaptiveConcurrencyLimiter: how many calls a server lets run at once,
// found by watching latency instead of configured by hand (the idea of
// Netflix's Gradient2 limiter; bRPC's auto limiter is a relative). A call
// over the limit is refused at once (RESOURCE_EXHAUSTED, safe to retry
// elsewhere) instead of queueing behind calls that are already slow.
//
// Every window (>= min_window_samples finished calls and >= window):
//   short = the window's mean latency
//   long  = the latency without queueing: a moving average of short while
//           load is light; under load it follows short only down and
//           creeps up by loaded_drift per window (the work may have got
//           slower), so sustained queueing does not become the baseline
//   gradient = clamp(tolerance x long / short, 0.5, 1)    (1: no queueing)
//   target = limit x gradient + sqrt(limit)               (room to probe)
//   limit  = limit + smoothing x (target - limit), within [min, max]
// When fewer than half the limit's calls ran at once in the window, the
// limit does not grow: nothing showed it is safe.
//
//   if (!limiter.TryAcquire()) return ResourceExhausted(...);
//   ... run the call ...
//   limiter.Release(latency);
//
// Thread-safety: one thread (one per loop: each loop limits its own calls).
#pragma once

#include <chrono>
#include <cstdint>

#include "base/clock.h"

namespace capstan::mesh {

struct AdaptiveLimiterOptions {
  int initial_limit = 50;
  int min_limit = 8;
  int max_limit = 2000;
  double tolerance = 2.0;
  double smoothing = 0.2;
  // Light load: the baseline moves by this share of each window's mean.
  double long_alpha = 0.05;
  // Under load: the baseline's upward creep per window.
  double loaded_drift = 0.002;
  int min_window_samples = 20;
  std::chrono::milliseconds window{100};
};

class AdaptiveConcurrencyLimiter {
 public:
  explicit AdaptiveConcurrencyLimiter(AdaptiveLimiterOptions options = {},
                                      const Clock* clock = nullptr);
  bool TryAcquire() {
    if (in_flight_ >= static_cast<int>(limit_)) return false;
    ++in_flight_;
    if (in_flight_ > max_in_flight_) max_in_flight_ = in_flight_;
    return true;
  }
  // REQUIRES: after a TryAcquire that returned true.
  void Release(std::chrono::nanoseconds latency);
  int limit() const { return static_cast<int>(limit_); }
  int in_flight() const { return in_flight_; }
  double long_latency_ms() const { return long_ns_ / 1e6; }

 private:
  void EndWindow(std::chrono::steady_clock::time_point now);

  AdaptiveLimiterOptions options_;
  const Clock* clock_;
  double limit_;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  double long_ns_ = 0;
  double window_sum_ns_ = 0;
  int window_samples_ = 0;
  std::chrono::steady_clock::time_point window_start_;
};

}  // namespace capstan::mesh
