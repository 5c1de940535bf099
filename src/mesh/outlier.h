// Outlier ejection: across an endpoint set, an endpoint whose success rate is
// far below its peers' is taken out of rotation for a while, even when its
// own failures are too few or too spread out to open its circuit breaker (a
// host that fails 20% of calls while the others fail 0.1%). This is Envoy's
// success-rate outlier detection:
//
//   every `interval`, over the endpoints with >= min_requests calls in it
//   (and only when there are >= min_hosts of them):
//     threshold = mean(success rate) - stdev_factor x stdev(success rate)
//     an endpoint below the threshold is ejected for
//     base_ejection_time x (times ejected before + 1), up to max_ejection_time
//   never more than max_ejection_percent of the set at once (but always one
//   may go); an endpoint not ejected in an interval has its count lowered
//   by one, so a host that recovered is forgiven over time.
//
// The caller keeps an OutlierStats per endpoint (EndpointState::outlier),
// records outcomes into it and calls MaybeEvaluate with the whole set.
//
// Thread-safety: one thread (the owning loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "base/clock.h"

namespace capstan::mesh {

struct OutlierOptions {
  bool enabled = true;
  std::chrono::milliseconds interval{10000};
  double stdev_factor = 1.9;
  int min_hosts = 5;
  int min_requests = 100;
  std::chrono::milliseconds base_ejection_time{30000};
  std::chrono::milliseconds max_ejection_time{300000};
  int max_ejection_percent = 10;
};

struct OutlierStats {
  uint64_t successes = 0;  // in the current interval
  uint64_t failures = 0;
  std::chrono::steady_clock::time_point ejected_until{};
  int times_ejected = 0;
  void Record(bool success) { (success ? successes : failures)++; }
  bool ejected(std::chrono::steady_clock::time_point now) const { return now < ejected_until; }
};

class OutlierDetector {
 public:
  explicit OutlierDetector(OutlierOptions options = {}, const Clock* clock = nullptr)
      : options_(options), clock_(clock != nullptr ? clock : RealClock::Get()) {
    next_ = clock_->Now() + options_.interval;
  }
  bool ejected(const OutlierStats& s) const { return s.ejected(clock_->Now()); }
  // An interval has passed: MaybeEvaluate would evaluate now.
  bool due() const { return options_.enabled && clock_->Now() >= next_; }
  // Evaluates the set when an interval has passed since the last time;
  // returns how many endpoints it ejected.
  int MaybeEvaluate(const std::vector<OutlierStats*>& endpoints);
  // Evaluates now (tests, and MaybeEvaluate's work).
  int Evaluate(const std::vector<OutlierStats*>& endpoints);

 private:
  OutlierOptions options_;
  const Clock* clock_;
  std::chrono::steady_clock::time_point next_;
};

}  // namespace capstan::mesh
