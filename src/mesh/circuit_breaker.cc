#include "mesh/circuit_breaker.h"

#include <algorithm>

namespace capstan::mesh {

const char* CircuitBreaker::StateName(State s) {
  switch (s) {
    case State::kClosed:
      return "closed";
    case State::kOpen:
      return "open";
    case State::kHalfOpen:
      return "half-open";
  }
  return "?";
}

CircuitBreaker::State CircuitBreaker::state() {
  if (state_ == State::kOpen && clock_->Now() >= open_until_) {
    state_ = State::kHalfOpen;
    probes_in_flight_ = 0;
    probe_successes_ = 0;
  }
  return state_;
}

bool CircuitBreaker::Allow() {
  switch (state()) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return false;
    case State::kHalfOpen:
      if (probes_in_flight_ >= options_.probes) return false;
      ++probes_in_flight_;
      return true;
  }
  return false;
}

void CircuitBreaker::Trim(TimePoint now) {
  int64_t second = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  int64_t oldest =
      second - std::chrono::duration_cast<std::chrono::seconds>(options_.window).count();
  while (!buckets_.empty() && buckets_.front().second <= oldest) buckets_.pop_front();
  if (buckets_.empty() || buckets_.back().second != second) buckets_.push_back({second, 0, 0});
}

void CircuitBreaker::RecordSuccess() {
  TimePoint now = clock_->Now();
  Trim(now);
  buckets_.back().calls++;
  consecutive_failures_ = 0;
  if (state_ == State::kHalfOpen) {
    probes_in_flight_ = std::max(0, probes_in_flight_ - 1);
    if (++probe_successes_ >= options_.probe_successes) {
      state_ = State::kClosed;
      current_open_ = std::chrono::milliseconds(0);
      buckets_.clear();  // judge the endpoint afresh
    }
  }
}

void CircuitBreaker::RecordFailure() {
  TimePoint now = clock_->Now();
  Trim(now);
  buckets_.back().calls++;
  buckets_.back().failures++;
  ++consecutive_failures_;
  if (state_ == State::kHalfOpen) {
    probes_in_flight_ = std::max(0, probes_in_flight_ - 1);
    Open(now);
    return;
  }
  if (state_ != State::kClosed) return;
  int calls = 0, failures = 0;
  for (const Bucket& b : buckets_) {
    calls += b.calls;
    failures += b.failures;
  }
  bool rate_trips = calls >= options_.min_calls_for_rate &&
                    failures >= options_.error_rate * static_cast<double>(calls);
  if (consecutive_failures_ >= options_.consecutive_failures || rate_trips) Open(now);
}

void CircuitBreaker::RecordAbandoned() {
  if (state_ == State::kHalfOpen) probes_in_flight_ = std::max(0, probes_in_flight_ - 1);
}

void CircuitBreaker::Open(TimePoint now) {
  // Each failed probe doubles the wait: an endpoint that stays down is
  // probed less and less often.
  current_open_ = current_open_.count() == 0
                      ? options_.open_duration
                      : std::min(current_open_ * 2, options_.max_open_duration);
  state_ = State::kOpen;
  open_until_ = now + current_open_;
  consecutive_failures_ = 0;
}

}  // namespace capstan::mesh
