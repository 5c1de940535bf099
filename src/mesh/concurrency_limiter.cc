#include "mesh/concurrency_limiter.h"

#include <algorithm>
#include <cmath>

namespace capstan::mesh {

AdaptiveConcurrencyLimiter::AdaptiveConcurrencyLimiter(AdaptiveLimiterOptions options,
                                                       const Clock* clock)
    : options_(options),
      clock_(clock != nullptr ? clock : RealClock::Get()),
      limit_(std::clamp(options.initial_limit, options.min_limit, options.max_limit)),
      window_start_(clock_->Now()) {}

void AdaptiveConcurrencyLimiter::Release(std::chrono::nanoseconds latency) {
  --in_flight_;
  window_sum_ns_ += static_cast<double>(latency.count());
  ++window_samples_;
  if (window_samples_ < options_.min_window_samples) return;
  auto now = clock_->Now();
  if (now - window_start_ >= options_.window) EndWindow(now);
}

void AdaptiveConcurrencyLimiter::EndWindow(std::chrono::steady_clock::time_point now) {
  double short_ns = std::max(1.0, window_sum_ns_ / window_samples_);
  bool near_limit = max_in_flight_ >= limit_ / 2;
  if (long_ns_ == 0) {
    long_ns_ = short_ns;
  } else if (!near_limit) {
    // Not loaded: what calls take now is the baseline, in either direction.
    long_ns_ += options_.long_alpha * (short_ns - long_ns_);
  } else {
    // Loaded: queueing inflates `short`, so the baseline only follows it
    // down, and creeps up slowly in case the work itself got slower.
    long_ns_ = std::min(long_ns_, short_ns) * (1 + options_.loaded_drift);
  }
  double gradient = std::clamp(options_.tolerance * long_ns_ / short_ns, 0.5, 1.0);
  double target = limit_ * gradient + std::sqrt(limit_);
  if (!near_limit) target = std::min(target, limit_);
  limit_ += options_.smoothing * (target - limit_);
  limit_ = std::clamp(limit_, static_cast<double>(options_.min_limit),
                      static_cast<double>(options_.max_limit));
  window_sum_ns_ = 0;
  window_samples_ = 0;
  max_in_flight_ = in_flight_;
  window_start_ = now;
}

}  // namespace capstan::mesh
