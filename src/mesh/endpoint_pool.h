// EndpointPool<Conn>: the client side of service governance, shared by every
// caller that balances over a set of endpoints — rpc::BalancedChannel (Conn =
// rpc::Channel) and the gateway's clusters (Conn = an upstream HTTP
// connection pool per endpoint). It knows neither: the caller says how to
// make a connection to an endpoint, sends each attempt itself, and tells the
// pool how the attempt ended. The pool decides everything else:
//
//   - the endpoint set, replaced whole on every update; an endpoint that
//     leaves is dropped from the pool but its connection lives on (held by
//     the calls in flight on it) until they end: draining;
//   - the pick: the balancer's choice, skipping endpoints whose circuit
//     breaker is open or that are ejected as outliers, and (first) those the
//     call already tried;
//   - outcome recording: EWMA latency (p2c uses it), the breaker, the
//     outlier counters;
//   - retries (max_attempts, a jittered doubling back-off, the call's
//     deadline, the retry budget) and hedges (hedge_delay, same budget).
//
//   auto pool = mesh::EndpointPool<Conn>::Create(
//       loop, "store://…/services/echo", {.balancer = "p2c"},
//       [loop](const mesh::Endpoint& e) { return Conn::Create(loop, e.host, e.port); }).value();
//   pool->Update(endpoints);                        // from the source, on the loop
//   absl::Status admitted = co_await pool->Admit("Echo", deadline);
//   std::vector<std::shared_ptr<Member>> tried;
//   for (int attempt = 1;; ++attempt) {
//     auto member = pool->Pick(hash, tried);        // nullptr: none usable
//     tried.push_back(member);
//     auto start = pool->BeginAttempt(*member);
//     Result r = co_await member->connection->Send(...);
//     pool->EndAttempt(*member, Verdict(r), start);
//     RetryDecision d = pool->DecideRetry(attempt, Retryable(r), r.not_processed, deadline);
//     if (!d.retry) return r;
//     pool->RecordRetry();
//     co_await loop->Sleep(d.backoff);
//   }
//
// Options can be replaced while calls run (SetOptions: per-service policies
// pushed from the store); new calls and picks follow the new ones.
//
// Thread-safety: one loop; every method on its thread. The clock (tests pass
// a ManualClock) drives breakers, outliers and the budget.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "base/clock.h"
#include "base/status.h"
#include "mesh/balancer.h"
#include "mesh/circuit_breaker.h"
#include "mesh/outlier.h"
#include "mesh/retry_budget.h"
#include "net/event_loop.h"
#include "net/task.h"

namespace capstan::mesh {

using PoolClock = std::chrono::steady_clock;

struct EndpointPoolOptions {
  std::string balancer = "p2c";
  CircuitBreakerOptions breaker;
  OutlierOptions outlier;
  RetryBudgetOptions retry_budget;
  // The first try plus retries and hedges.
  int max_attempts = 3;
  // Before a retry: doubling from initial_retry_backoff up to
  // max_retry_backoff, each with +-50% jitter. The first retry of a call the
  // endpoint never ran (connection refused, GOAWAY) goes at once.
  PoolClock::duration initial_retry_backoff = std::chrono::milliseconds(10);
  PoolClock::duration max_retry_backoff = std::chrono::milliseconds(500);
  // Zero: no hedging. Otherwise a call unanswered for this long is also sent
  // to another endpoint (up to max_attempts copies in all).
  PoolClock::duration hedge_delay = PoolClock::duration::zero();
  // A call made before the first endpoint set waits this long for it (or
  // until its deadline).
  PoolClock::duration wait_for_endpoints = std::chrono::seconds(5);
  // Zero: none. The deadline of a call that brings none of its own.
  PoolClock::duration timeout = PoolClock::duration::zero();
  // Zero: none. Each attempt ends after this long even when the call's
  // deadline is further away (then it may be retried).
  PoolClock::duration per_try_timeout = PoolClock::duration::zero();
};

struct EndpointPoolStats {
  uint64_t calls = 0;
  uint64_t retries = 0;
  uint64_t hedges = 0;
  // Retries or hedges wanted but refused by the retry budget.
  uint64_t budget_refusals = 0;
  // Calls that found no endpoint to send to.
  uint64_t no_endpoint = 0;
  // Endpoint set updates applied.
  uint64_t updates = 0;
  // Option sets applied after creation (policy updates).
  uint64_t option_changes = 0;
};

// How one attempt ended, as the caller judges it.
enum class AttemptVerdict {
  kSuccess,
  // Says something about the endpoint (unreachable, overloaded, timed out,
  // internal error): counts against its breaker and outlier record.
  kEndpointFailure,
  // Says something about the request only (not found, invalid argument):
  // the endpoint answered, so for the breaker it is a success.
  kRequestFailure,
  // Ended without a verdict: cancelled because another copy answered first.
  kAbandoned,
};

struct RetryDecision {
  bool retry = false;
  // Whether to wait before the retry (zero: go at once).
  PoolClock::duration backoff = PoolClock::duration::zero();
  // Set when the retry was wanted but the retry budget refused it.
  bool budget_refused = false;
};

// An endpoint of the pool and what the pool knows of it.
struct PooledEndpointState : EndpointState {
  using EndpointState::EndpointState;
  uint64_t calls = 0;
  uint64_t failures = 0;
};

// The part of the pool that does not depend on the connection type.
class EndpointPoolCore {
 public:
  // INVALID_ARGUMENT naming the field when `options` cannot work.
  static absl::Status Validate(const EndpointPoolOptions& options);

  net::EventLoop* loop() const { return loop_; }
  const EndpointPoolOptions& options() const { return options_; }
  const EndpointPoolStats& stats() const { return stats_; }
  std::string_view balancer_name() const { return balancer_->name(); }
  const std::string& target() const { return target_; }
  bool have_endpoints() const { return have_endpoints_; }
  size_t size() const { return states_.size(); }

  // Replaces the options (validated first; the old ones stay on error). A
  // new balancer starts from the current set; breakers keep their state and
  // use the new settings from their next transition; the retry budget starts
  // a fresh window; outlier ejections already made run their course.
  absl::Status SetOptions(EndpointPoolOptions options);

  // Counts a call and waits (bounded by `deadline` and wait_for_endpoints)
  // for the first endpoint set; UNAVAILABLE (or DEADLINE_EXCEEDED when the
  // deadline passed) when none came. `what` names the call in the error.
  net::Task<absl::Status> Admit(std::string_view what, PoolClock::time_point deadline);

  // The deadline of a call: its own, else options().timeout from now, else
  // none (time_point::max()).
  PoolClock::time_point CallDeadline(PoolClock::time_point own) const;
  // How long the next attempt may take: until the call's deadline, cut to
  // per_try_timeout; at least 1 ns.
  PoolClock::duration AttemptTimeout(PoolClock::time_point deadline) const;

  // An attempt starts on `endpoint` (counts it outstanding); returns its
  // start time for EndAttempt.
  PoolClock::time_point BeginAttempt(PooledEndpointState& endpoint);
  void EndAttempt(PooledEndpointState& endpoint, AttemptVerdict verdict,
                  PoolClock::time_point start);
  // Records an outcome without an attempt in flight (a stream that failed
  // to open, an attempt that never went out).
  void RecordOutcome(PooledEndpointState& endpoint, AttemptVerdict verdict);

  // After `attempts_made` attempts, the last one failed: retry? `retryable`
  // is the caller's judgement (the endpoint did not run it, or running it
  // twice is safe); `not_processed` lets the first retry go at once.
  // Takes from the retry budget when it says yes.
  RetryDecision DecideRetry(int attempts_made, bool retryable, bool not_processed,
                            PoolClock::time_point deadline);
  // Whether calls are hedged at all (hedge_delay set, max_attempts > 1).
  bool hedging() const {
    return options_.hedge_delay > PoolClock::duration::zero() && options_.max_attempts > 1;
  }
  // Another attempt at once, after `attempts_made`: a hedge (the hedge
  // delay passed unanswered), or a retry that needs no back-off (a stream
  // that could not open, every hedged copy failed). Within max_attempts;
  // takes from the retry budget when it says yes.
  bool DecideAnotherAttempt(int attempts_made);
  void RecordRetry() { stats_.retries++; }
  void RecordHedge() { stats_.hedges++; }

  // The error for a call that found no endpoint to send to (counts it).
  absl::Status NoEndpoint(std::string_view what);
  bool ejected(const PooledEndpointState& endpoint) const {
    return outliers_.ejected(endpoint.outlier);
  }

 protected:
  EndpointPoolCore(net::EventLoop* loop, std::string target, EndpointPoolOptions options,
                   std::unique_ptr<Balancer> balancer, const Clock* clock);
  ~EndpointPoolCore();
  EndpointPoolCore(const EndpointPoolCore&) = delete;
  EndpointPoolCore& operator=(const EndpointPoolCore&) = delete;

  // The set changed: `states` is the new one (owned by the subclass).
  void SetStates(std::vector<PooledEndpointState*> states);
  // One endpoint whose breaker lets a call through, not ejected; first not
  // in `tried`, then (when every other is unusable) any. nullptr: none.
  PooledEndpointState* PickState(uint64_t hash,
                                 const std::vector<const PooledEndpointState*>& tried);
  const CircuitBreakerOptions& breaker_options() const { return options_.breaker; }
  const Clock* clock() const { return clock_; }

 private:
  struct EndpointWaiter;
  net::Task<bool> WaitForEndpoints(PoolClock::time_point deadline);

  net::EventLoop* loop_;
  std::string target_;
  EndpointPoolOptions options_;
  std::unique_ptr<Balancer> balancer_;
  const Clock* clock_;
  RetryBudget budget_;
  OutlierDetector outliers_;
  std::vector<PooledEndpointState*> states_;
  bool have_endpoints_ = false;
  std::vector<EndpointWaiter*> endpoint_waiters_;
  uint64_t rng_state_;
  EndpointPoolStats stats_;
};

// The pool over connections of type Conn. Conn is whatever the caller sends
// on: the factory given at creation makes one per endpoint when it joins.
template <typename Conn>
class EndpointPool : public EndpointPoolCore {
 public:
  // An endpoint with its connection. Calls hold it by shared_ptr, so one
  // that leaves the set lives until its calls end.
  struct Member : PooledEndpointState, std::enable_shared_from_this<Member> {
    using PooledEndpointState::PooledEndpointState;
    std::shared_ptr<Conn> connection;
  };
  using ConnectionFactory = absl::AnyInvocable<std::shared_ptr<Conn>(const Endpoint&)>;

  // `target` names the endpoints' source in errors and logs. `clock`
  // (nullptr: the real one) must outlive the pool.
  static absl::StatusOr<std::unique_ptr<EndpointPool>> Create(net::EventLoop* loop,
                                                              std::string target,
                                                              EndpointPoolOptions options,
                                                              ConnectionFactory connect,
                                                              const Clock* clock = nullptr) {
    if (absl::Status st = Validate(options); !st.ok()) return st;
    absl::StatusOr<std::unique_ptr<Balancer>> balancer = NewBalancer(options.balancer);
    if (!balancer.ok()) return balancer.status();
    return std::unique_ptr<EndpointPool>(new EndpointPool(loop, std::move(target),
                                                          std::move(options), *std::move(balancer),
                                                          std::move(connect), clock));
  }

  // Replaces the endpoint set. An endpoint whose id, host and port are
  // unchanged keeps its connection and its record (breaker, latency); one
  // that left is released here and drains: its calls in flight hold it.
  void Update(std::vector<Endpoint> endpoints) {
    absl::flat_hash_map<std::string, std::shared_ptr<Member>> next;
    for (Endpoint& e : endpoints) {
      auto it = members_.find(e.id);
      if (it != members_.end() && it->second->endpoint.host == e.host &&
          it->second->endpoint.port == e.port) {
        it->second->endpoint.weight = e.weight;
        next[e.id] = std::move(it->second);
        continue;
      }
      auto member = std::make_shared<Member>(e);
      member->breaker = CircuitBreaker(breaker_options(), clock());
      member->connection = connect_(e);
      next[e.id] = std::move(member);
    }
    members_ = std::move(next);
    std::vector<PooledEndpointState*> states;
    states.reserve(members_.size());
    for (auto& [id, m] : members_) states.push_back(m.get());
    SetStates(std::move(states));
  }

  // See PickState; `tried` are the endpoints this call already went to.
  std::shared_ptr<Member> Pick(uint64_t hash, const std::vector<std::shared_ptr<Member>>& tried) {
    std::vector<const PooledEndpointState*> tried_states;
    tried_states.reserve(tried.size());
    for (const auto& m : tried) tried_states.push_back(m.get());
    PooledEndpointState* picked = PickState(hash, tried_states);
    if (picked == nullptr) return nullptr;
    return static_cast<Member*>(picked)->shared_from_this();
  }

  // The current set by id (members that drain are not in it).
  const absl::flat_hash_map<std::string, std::shared_ptr<Member>>& members() const {
    return members_;
  }

 private:
  EndpointPool(net::EventLoop* loop, std::string target, EndpointPoolOptions options,
               std::unique_ptr<Balancer> balancer, ConnectionFactory connect, const Clock* clock)
      : EndpointPoolCore(loop, std::move(target), std::move(options), std::move(balancer), clock),
        connect_(std::move(connect)) {}

  ConnectionFactory connect_;
  absl::flat_hash_map<std::string, std::shared_ptr<Member>> members_;
};

}  // namespace capstan::mesh
