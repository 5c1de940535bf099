#include "mesh/endpoint_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::mesh {

namespace {

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

// A call waiting for the first endpoint set.
struct EndpointPoolCore::EndpointWaiter {
  explicit EndpointWaiter(absl::AnyInvocable<void()> on_timeout) : timer(std::move(on_timeout)) {}
  std::coroutine_handle<> handle;
  net::Timer timer;
};

absl::Status EndpointPoolCore::Validate(const EndpointPoolOptions& options) {
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1 (the first try)");
  }
  if (options.initial_retry_backoff < PoolClock::duration::zero() ||
      options.max_retry_backoff < options.initial_retry_backoff) {
    return absl::InvalidArgumentError(
        "retry back-off: need 0 <= initial_retry_backoff <= max_retry_backoff");
  }
  if (options.hedge_delay < PoolClock::duration::zero() ||
      options.timeout < PoolClock::duration::zero() ||
      options.per_try_timeout < PoolClock::duration::zero() ||
      options.wait_for_endpoints < PoolClock::duration::zero()) {
    return absl::InvalidArgumentError(
        "hedge_delay, timeout, per_try_timeout and wait_for_endpoints cannot be negative");
  }
  if (options.retry_budget.ratio < 0 || options.retry_budget.min_retries_per_second < 0 ||
      options.retry_budget.window.count() <= 0) {
    return absl::InvalidArgumentError(
        "retry_budget: ratio and min_retries_per_second >= 0, window > 0");
  }
  if (options.breaker.consecutive_failures < 1 || options.breaker.error_rate <= 0 ||
      options.breaker.error_rate > 1 || options.breaker.probes < 1 ||
      options.breaker.probe_successes < 1 || options.breaker.open_duration.count() <= 0 ||
      options.breaker.max_open_duration < options.breaker.open_duration ||
      options.breaker.window.count() <= 0) {
    return absl::InvalidArgumentError(
        "circuit_breaker: consecutive_failures, probes, probe_successes >= 1; 0 < error_rate <= "
        "1; 0 < open_duration <= max_open_duration; window > 0");
  }
  if (options.outlier.interval.count() <= 0 || options.outlier.stdev_factor < 0 ||
      options.outlier.min_hosts < 1 || options.outlier.max_ejection_percent < 0 ||
      options.outlier.max_ejection_percent > 100 ||
      options.outlier.base_ejection_time.count() <= 0 ||
      options.outlier.max_ejection_time < options.outlier.base_ejection_time) {
    return absl::InvalidArgumentError(
        "outlier: interval > 0, stdev_factor >= 0, min_hosts >= 1, 0 <= max_ejection_percent <= "
        "100, 0 < base_ejection_time <= max_ejection_time");
  }
  return absl::OkStatus();
}

EndpointPoolCore::EndpointPoolCore(net::EventLoop* loop, std::string target,
                                   EndpointPoolOptions options, std::unique_ptr<Balancer> balancer,
                                   const Clock* clock)
    : loop_(loop),
      target_(std::move(target)),
      options_(std::move(options)),
      balancer_(std::move(balancer)),
      clock_(clock != nullptr ? clock : RealClock::Get()),
      budget_(options_.retry_budget, clock_),
      outliers_(options_.outlier, clock_),
      rng_state_(reinterpret_cast<uintptr_t>(this) ^
                 static_cast<uint64_t>(PoolClock::now().time_since_epoch().count())) {}

// No call waits for endpoints here: each holds its pool's owner.
EndpointPoolCore::~EndpointPoolCore() = default;

absl::Status EndpointPoolCore::SetOptions(EndpointPoolOptions options) {
  if (absl::Status st = Validate(options); !st.ok()) return st;
  if (options.balancer != balancer_->name()) {
    absl::StatusOr<std::unique_ptr<Balancer>> balancer = NewBalancer(options.balancer);
    if (!balancer.ok()) return balancer.status();
    balancer_ = *std::move(balancer);
    std::vector<EndpointState*> states(states_.begin(), states_.end());
    balancer_->Update(states);
  }
  for (PooledEndpointState* state : states_) state->breaker.set_options(options.breaker);
  budget_ = RetryBudget(options.retry_budget, clock_);
  outliers_ = OutlierDetector(options.outlier, clock_);
  options_ = std::move(options);
  stats_.option_changes++;
  return absl::OkStatus();
}

void EndpointPoolCore::SetStates(std::vector<PooledEndpointState*> states) {
  stats_.updates++;
  if (states_.size() != states.size() || !states.empty()) {
    CAPSTAN_LOG(debug, "endpoint set updated", "target", target_, "endpoints", states.size());
  }
  states_ = std::move(states);
  std::vector<EndpointState*> plain(states_.begin(), states_.end());
  balancer_->Update(plain);
  have_endpoints_ = true;
  for (EndpointWaiter* w : std::exchange(endpoint_waiters_, {})) {
    w->timer.Cancel();
    loop_->Schedule(w->handle);
  }
}

net::Task<bool> EndpointPoolCore::WaitForEndpoints(PoolClock::time_point deadline) {
  if (have_endpoints_) co_return true;
  PoolClock::time_point until = std::min(deadline, PoolClock::now() + options_.wait_for_endpoints);
  struct Wait {
    EndpointPoolCore* self;
    EndpointWaiter* waiter;
    PoolClock::time_point until;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      waiter->handle = h;
      self->endpoint_waiters_.push_back(waiter);
      waiter->timer.Arm(self->loop_, until);
    }
    void await_resume() const noexcept {}
  };
  EndpointWaiter waiter([this, &waiter] {
    std::erase(endpoint_waiters_, &waiter);
    loop_->Schedule(waiter.handle);
  });
  co_await Wait{this, &waiter, until};
  co_return have_endpoints_;
}

net::Task<absl::Status> EndpointPoolCore::Admit(std::string_view what,
                                                PoolClock::time_point deadline) {
  stats_.calls++;
  // (No co_await inside && or ||: GCC 12 miscompiles it.)
  bool have_endpoints = have_endpoints_;
  if (!have_endpoints) have_endpoints = co_await WaitForEndpoints(deadline);
  if (!have_endpoints) {
    absl::Status failure = NoEndpoint(what);
    if (PoolClock::now() >= deadline) {
      failure = absl::DeadlineExceededError(
          absl::StrCat("deadline passed waiting for the first endpoints of ", target_));
    }
    co_return failure;
  }
  budget_.RecordCall();
  co_return absl::OkStatus();
}

PoolClock::time_point EndpointPoolCore::CallDeadline(PoolClock::time_point own) const {
  if (own == PoolClock::time_point::max() && options_.timeout > PoolClock::duration::zero()) {
    return PoolClock::now() + options_.timeout;
  }
  return own;
}

PoolClock::duration EndpointPoolCore::AttemptTimeout(PoolClock::time_point deadline) const {
  PoolClock::duration left = PoolClock::duration::max();
  if (deadline != PoolClock::time_point::max()) left = deadline - PoolClock::now();
  if (options_.per_try_timeout > PoolClock::duration::zero()) {
    left = std::min(left, options_.per_try_timeout);
  }
  return std::max(left, PoolClock::duration(1));
}

PooledEndpointState* EndpointPoolCore::PickState(
    uint64_t hash, const std::vector<const PooledEndpointState*>& tried) {
  if (states_.empty()) return nullptr;
  if (outliers_.due()) {
    std::vector<OutlierStats*> all;
    all.reserve(states_.size());
    for (PooledEndpointState* s : states_) all.push_back(&s->outlier);
    if (int n = outliers_.MaybeEvaluate(all); n > 0) {
      CAPSTAN_LOG(info, "ejected outlier endpoints", "target", target_, "count", n);
    }
  }
  absl::flat_hash_set<const EndpointState*> exclude(tried.begin(), tried.end());
  // Two passes: first avoiding endpoints this call already tried, then (a
  // small set) any whose breaker lets it through.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      if (tried.empty()) break;
      for (const PooledEndpointState* s : tried) exclude.erase(s);
    }
    for (size_t i = 0; i <= states_.size(); ++i) {
      EndpointState* e = balancer_->Pick({.hash = hash, .exclude = &exclude});
      if (e == nullptr) break;
      auto* s = static_cast<PooledEndpointState*>(e);
      if (!outliers_.ejected(s->outlier) && s->breaker.Allow()) return s;
      exclude.insert(e);
    }
  }
  return nullptr;
}

PoolClock::time_point EndpointPoolCore::BeginAttempt(PooledEndpointState& endpoint) {
  endpoint.outstanding++;
  endpoint.calls++;
  return PoolClock::now();
}

void EndpointPoolCore::EndAttempt(PooledEndpointState& endpoint, AttemptVerdict verdict,
                                  PoolClock::time_point start) {
  endpoint.outstanding--;
  RecordOutcome(endpoint, verdict);
  if (verdict == AttemptVerdict::kSuccess || verdict == AttemptVerdict::kRequestFailure) {
    endpoint.RecordLatency(PoolClock::now() - start);
  }
}

void EndpointPoolCore::RecordOutcome(PooledEndpointState& endpoint, AttemptVerdict verdict) {
  switch (verdict) {
    case AttemptVerdict::kAbandoned:
      endpoint.breaker.RecordAbandoned();
      break;
    case AttemptVerdict::kEndpointFailure:
      endpoint.failures++;
      endpoint.breaker.RecordFailure();
      endpoint.outlier.Record(false);
      break;
    case AttemptVerdict::kSuccess:
    case AttemptVerdict::kRequestFailure:
      endpoint.breaker.RecordSuccess();
      endpoint.outlier.Record(true);
      break;
  }
}

RetryDecision EndpointPoolCore::DecideRetry(int attempts_made, bool retryable, bool not_processed,
                                            PoolClock::time_point deadline) {
  RetryDecision decision;
  if (!retryable || attempts_made >= options_.max_attempts) return decision;
  if (attempts_made > 1 || !not_processed) {
    PoolClock::duration base = options_.initial_retry_backoff;
    for (int i = 1; i < attempts_made && base < options_.max_retry_backoff; ++i) base *= 2;
    base = std::min(base, options_.max_retry_backoff);
    double jitter = 0.5 + static_cast<double>(SplitMix(&rng_state_) >> 11) / 9007199254740992.0;
    decision.backoff = std::chrono::duration_cast<PoolClock::duration>(base * jitter);
  }
  if (PoolClock::now() + decision.backoff >= deadline) return RetryDecision{};
  if (!budget_.TryRetry()) {
    stats_.budget_refusals++;
    return RetryDecision{.budget_refused = true};
  }
  decision.retry = true;
  return decision;
}

bool EndpointPoolCore::DecideAnotherAttempt(int attempts_made) {
  if (attempts_made >= options_.max_attempts) return false;
  if (!budget_.TryRetry()) {
    stats_.budget_refusals++;
    return false;
  }
  return true;
}

absl::Status EndpointPoolCore::NoEndpoint(std::string_view what) {
  stats_.no_endpoint++;
  if (!have_endpoints_) {
    return absl::UnavailableError(
        absl::StrCat("no endpoints yet for ", std::string(what), " from ", target_));
  }
  if (states_.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no endpoints for ", std::string(what), " in ", target_));
  }
  return absl::UnavailableError(absl::StrCat("all ", states_.size(), " endpoints of ", target_,
                                             " are refusing calls (circuit breakers open or "
                                             "ejected)"));
}

}  // namespace capstan::mesh
