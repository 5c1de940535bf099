#include "rpc/balanced_channel.h"

#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::rpc {

namespace {

// Failures that say something about the endpoint rather than the request.
bool EndpointFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

mesh::AttemptVerdict VerdictOf(const CallResult& result, const CallOptions& options) {
  if (options.canceller != nullptr && options.canceller->cancelled() &&
      result.status.code() == absl::StatusCode::kCancelled) {
    return mesh::AttemptVerdict::kAbandoned;
  }
  if (EndpointFailure(result.status)) return mesh::AttemptVerdict::kEndpointFailure;
  if (result.status.ok()) return mesh::AttemptVerdict::kSuccess;
  return mesh::AttemptVerdict::kRequestFailure;
}

// Whether another endpoint may be tried: the server did not run the call,
// it was shed before running, or running it twice is safe.
bool Retryable(const CallResult& result, const CallOptions& options) {
  if (result.status.ok()) return false;
  if (result.not_processed) return true;
  switch (result.status.code()) {
    case absl::StatusCode::kResourceExhausted:  // shed before running
      return true;
    case absl::StatusCode::kUnavailable:
      return options.idempotent;
    // Only a per-try timeout ends an attempt before the call's deadline
    // (at the deadline the pool retries nothing).
    case absl::StatusCode::kDeadlineExceeded:
      return options.idempotent;
    default:
      return false;
  }
}

}  // namespace

// The copies of one hedged call: answers arrive here in order.
struct BalancedChannel::HedgeState {
  std::deque<CallResult> answers;
  bool hedge_due = false;
  std::coroutine_handle<> waiter;
  net::EventLoop* loop = nullptr;
  // One per copy; index = copy number.
  std::vector<std::unique_ptr<CallCanceller>> cancellers;

  void Wake() {
    if (waiter) loop->Schedule(std::exchange(waiter, nullptr));
  }
  struct Awaiter {
    HedgeState* state;
    bool await_ready() const noexcept { return !state->answers.empty() || state->hedge_due; }
    void await_suspend(std::coroutine_handle<> h) { state->waiter = h; }
    void await_resume() const noexcept {}
  };
};

mesh::EndpointPoolOptions BalancedChannelOptions::PoolOptions() const {
  return {.balancer = balancer,
          .breaker = breaker,
          .outlier = outlier,
          .retry_budget = retry_budget,
          .max_attempts = max_attempts,
          .initial_retry_backoff = initial_retry_backoff,
          .max_retry_backoff = max_retry_backoff,
          .hedge_delay = hedge_delay,
          .wait_for_endpoints = wait_for_endpoints,
          .timeout = timeout,
          .per_try_timeout = per_try_timeout};
}

absl::StatusOr<std::shared_ptr<BalancedChannel>> BalancedChannel::Create(
    net::EventLoop* loop, std::unique_ptr<mesh::EndpointSource> source,
    BalancedChannelOptions options) {
  // One TLS client context for every endpoint's channel, checked here so
  // bad options fail Create rather than each call.
  if (options.channel.tls.enabled && options.channel.tls.context == nullptr) {
    ASSIGN_OR_RETURN(options.channel.tls.context, NewChannelTlsContext(options.channel.tls));
  }
  absl::StatusOr<std::unique_ptr<Pool>> pool =
      Pool::Create(loop, source->Describe(), options.PoolOptions(),
                   [loop, channel_options = options.channel](const mesh::Endpoint& e) {
                     return Channel::Create(loop, e.host, e.port, channel_options);
                   });
  if (!pool.ok()) return pool.status();
  std::shared_ptr<BalancedChannel> channel(
      new BalancedChannel(loop, *std::move(pool), std::move(source)));
  std::weak_ptr<BalancedChannel> weak = channel;
  channel->source_->Start([loop, weak](std::vector<mesh::Endpoint> endpoints) {
    loop->Post([weak, endpoints = std::move(endpoints)]() mutable {
      if (auto self = weak.lock()) self->UpdateEndpoints(std::move(endpoints));
    });
  });
  return channel;
}

BalancedChannel::BalancedChannel(net::EventLoop* loop, std::unique_ptr<Pool> pool,
                                 std::unique_ptr<mesh::EndpointSource> source)
    : loop_(loop),
      pool_(std::move(pool)),
      source_(std::move(source)),
      source_description_(source_->Describe()),
      own_options_(pool_->options()) {}

BalancedChannel::~BalancedChannel() {
  policy_subscription_.reset();
  // The source's thread may be posting an update: once it is gone, no more
  // arrive (and those posted find the channel gone).
  source_.reset();
}

std::string BalancedChannel::Describe() const {
  return absl::StrCat(source_description_, " (", std::string(pool_->balancer_name()), ")");
}

void BalancedChannel::UpdateEndpoints(std::vector<mesh::Endpoint> endpoints) {
  pool_->Update(std::move(endpoints));
}

absl::Status BalancedChannel::SetPolicy(const mesh::EndpointPoolOptions& options) {
  return pool_->SetOptions(options);
}

void BalancedChannel::FollowPolicy(mesh::PolicyWatcher& watcher, const std::string& service) {
  std::weak_ptr<BalancedChannel> weak = weak_from_this();
  policy_subscription_ = watcher.Subscribe(
      service, loop_, [weak, service](const std::optional<mesh::EndpointPoolOptions>& policy) {
        std::shared_ptr<BalancedChannel> self = weak.lock();
        if (self == nullptr) return;
        mesh::EndpointPoolOptions next = policy.has_value() ? *policy : self->own_options_;
        next.wait_for_endpoints = self->own_options_.wait_for_endpoints;
        if (absl::Status st = self->SetPolicy(next); !st.ok()) {
          CAPSTAN_LOG(err, "cannot apply the mesh policy; keeping the current one", "service",
                      service, "target", self->source_description_, "error",
                      std::string(st.message()));
          return;
        }
        CAPSTAN_LOG(info, "mesh policy in force", "service", service, "target",
                    self->source_description_, "balancer", next.balancer, "from",
                    policy.has_value() ? "store" : "channel options");
      });
}

std::vector<BalancedEndpointInfo> BalancedChannel::Endpoints() {
  std::vector<BalancedEndpointInfo> out;
  for (auto& [id, m] : pool_->members()) {
    out.push_back({.endpoint = m->endpoint,
                   .outstanding = m->outstanding,
                   .ewma_latency_ms = m->ewma_latency_ns / 1e6,
                   .breaker = mesh::CircuitBreaker::StateName(m->breaker.state()),
                   .ejected = pool_->ejected(*m),
                   .connected = m->connection->connected(),
                   .calls = m->calls,
                   .failures = m->failures});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.endpoint.id < b.endpoint.id; });
  return out;
}

CallResult BalancedChannel::NoEndpoint(std::string_view method) {
  CallResult r;
  r.not_processed = true;
  r.status = pool_->NoEndpoint(method);
  return r;
}

net::Task<CallResult> BalancedChannel::Attempt(std::shared_ptr<Member> member,
                                               std::string_view method, net::Buffer request,
                                               CallOptions options, Clock::time_point deadline) {
  Clock::time_point start = pool_->BeginAttempt(*member);
  Clock::duration timeout = pool_->AttemptTimeout(deadline);
  if (timeout != Clock::duration::max()) options.timeout = timeout;
  CallResult result = co_await member->connection->CallBytes(method, std::move(request), options);
  pool_->EndAttempt(*member, VerdictOf(result, options), start);
  co_return result;
}

Clock::time_point BalancedChannel::DeadlineOf(const CallOptions& options) const {
  Clock::time_point deadline = Clock::time_point::max();
  if (options.timeout > Clock::duration::zero()) deadline = Clock::now() + options.timeout;
  if (options.parent != nullptr) deadline = std::min(deadline, options.parent->deadline());
  return pool_->CallDeadline(deadline);
}

net::Task<bool> BalancedChannel::ReadyToCall(std::string_view method, Clock::time_point deadline,
                                             CallResult* failure) {
  absl::Status admitted = co_await pool_->Admit(method, deadline);
  if (!admitted.ok()) {
    failure->status = std::move(admitted);
    failure->not_processed = true;
    co_return false;
  }
  co_return true;
}

net::Task<std::unique_ptr<ClientStream>> BalancedChannel::OpenStream(std::string_view method,
                                                                     const CallOptions& options,
                                                                     net::Buffer* request) {
  std::shared_ptr<BalancedChannel> self = shared_from_this();
  Clock::time_point deadline = DeadlineOf(options);
  CallResult failure;
  bool ready = co_await ReadyToCall(method, deadline, &failure);
  if (!ready) co_return ClientStream::Unsent(std::move(failure));
  std::vector<std::shared_ptr<Member>> tried;
  for (int attempt = 1;; ++attempt) {
    std::shared_ptr<Member> member = pool_->Pick(options.hash, tried);
    if (member == nullptr) co_return ClientStream::Unsent(NoEndpoint(method));
    tried.push_back(member);
    member->calls++;
    CallOptions attempt_options = options;
    // A stream's life is not an attempt: only the call's deadline bounds it.
    if (deadline != Clock::time_point::max()) {
      attempt_options.timeout = std::max(deadline - Clock::now(), Clock::duration(1));
    }
    net::Buffer copy = request != nullptr ? request->Share() : net::Buffer();
    std::unique_ptr<ClientStream> stream = co_await member->connection->OpenStream(
        method, attempt_options, request != nullptr ? &copy : nullptr);
    // How a stream ends says little about its endpoint (a watch may be
    // cancelled after an hour); opening it is what the breaker learns from.
    if (!stream->done()) {
      member->breaker.RecordSuccess();
      co_return stream;
    }
    CallResult result = co_await stream->Finish();  // not sent: why
    if (EndpointFailure(result.status)) {
      pool_->RecordOutcome(*member, mesh::AttemptVerdict::kEndpointFailure);
    }
    if (!result.not_processed) co_return ClientStream::Unsent(std::move(result));
    // Opening again goes at once: nothing was sent.
    if (!pool_->DecideAnotherAttempt(attempt)) co_return ClientStream::Unsent(std::move(result));
    pool_->RecordRetry();
  }
}

net::Task<CallResult> BalancedChannel::CallBytes(std::string_view method, net::Buffer request,
                                                 const CallOptions& options) {
  // Calls hold the channel: its owner may drop it while they run.
  std::shared_ptr<BalancedChannel> self = shared_from_this();
  Clock::time_point deadline = DeadlineOf(options);
  CallResult failure;
  bool ready = co_await ReadyToCall(method, deadline, &failure);
  if (!ready) co_return failure;
  if (pool_->hedging()) co_return co_await CallHedged(method, request, options, deadline);
  co_return co_await CallWithRetries(method, request, options, deadline);
}

net::Task<CallResult> BalancedChannel::CallWithRetries(std::string_view method,
                                                       const net::Buffer& request,
                                                       const CallOptions& options,
                                                       Clock::time_point deadline) {
  std::vector<std::shared_ptr<Member>> tried;
  for (int attempt = 1;; ++attempt) {
    CallResult result;
    std::shared_ptr<Member> member = pool_->Pick(options.hash, tried);
    if (member == nullptr) {
      result = NoEndpoint(method);
    } else {
      tried.push_back(member);
      result = co_await Attempt(std::move(member), method, request.Share(), options, deadline);
    }
    mesh::RetryDecision decision =
        pool_->DecideRetry(attempt, Retryable(result, options), result.not_processed, deadline);
    if (decision.budget_refused) {
      result.status = absl::Status(
          result.status.code(),
          absl::StrCat(result.status.message(), " (not retried: retry budget exhausted)"));
    }
    if (!decision.retry) co_return result;
    pool_->RecordRetry();
    if (decision.backoff > Clock::duration::zero()) co_await loop_->Sleep(decision.backoff);
  }
}

net::Task<void> BalancedChannel::RunHedgeCopy(std::shared_ptr<BalancedChannel> self,
                                              std::shared_ptr<HedgeState> state,
                                              std::shared_ptr<Member> member, std::string method,
                                              net::Buffer request, CallOptions options,
                                              Clock::time_point deadline, size_t index) {
  options.canceller = state->cancellers[index].get();
  CallResult result =
      co_await self->Attempt(std::move(member), method, std::move(request), options, deadline);
  state->answers.push_back(std::move(result));
  state->Wake();
}

net::Task<CallResult> BalancedChannel::CallHedged(std::string_view method,
                                                  const net::Buffer& request,
                                                  const CallOptions& options,
                                                  Clock::time_point deadline) {
  auto state = std::make_shared<HedgeState>();
  state->loop = loop_;
  std::vector<std::shared_ptr<Member>> tried;
  size_t in_flight = 0;
  auto launch = [&]() -> bool {
    std::shared_ptr<Member> member = pool_->Pick(options.hash, tried);
    if (member == nullptr) return false;
    tried.push_back(member);
    size_t index = state->cancellers.size();
    state->cancellers.push_back(std::make_unique<CallCanceller>());
    ++in_flight;
    // The copy outlives this frame: it gets its own options, and reads the
    // parent (alive now) before its first wait (CallOptions::parent).
    loop_->StartOwned(RunHedgeCopy(shared_from_this(), state, std::move(member),
                                   std::string(method), request.Share(), options, deadline, index));
    return true;
  };
  auto finish = [&](CallResult result) {
    for (auto& c : state->cancellers) c->Cancel();
    return result;
  };

  if (!launch()) co_return NoEndpoint(method);
  Clock::duration hedge_delay = pool_->options().hedge_delay;
  int max_attempts = pool_->options().max_attempts;
  net::Timer hedge_timer([&state] {
    state->hedge_due = true;
    state->Wake();
  });
  int attempts = 1;
  if (attempts < max_attempts) hedge_timer.ArmAfter(loop_, hedge_delay);
  CallResult last;
  while (true) {
    co_await HedgeState::Awaiter{state.get()};
    if (!state->answers.empty()) {
      CallResult result = std::move(state->answers.front());
      state->answers.pop_front();
      --in_flight;
      if (!Retryable(result, options)) {
        hedge_timer.Cancel();
        co_return finish(std::move(result));
      }
      last = std::move(result);
      if (in_flight > 0) continue;  // another copy may still answer
      // Every copy failed in a way worth retrying: one more, now.
      hedge_timer.Cancel();
      if (Clock::now() >= deadline) co_return last;
      if (!pool_->DecideAnotherAttempt(attempts)) co_return last;
      if (!launch()) co_return last;
      pool_->RecordRetry();
      ++attempts;
      if (attempts < max_attempts) hedge_timer.ArmAfter(loop_, hedge_delay);
      continue;
    }
    // The hedge delay passed without an answer.
    state->hedge_due = false;
    if (!pool_->DecideAnotherAttempt(attempts)) continue;
    if (launch()) {
      pool_->RecordHedge();
      ++attempts;
    }
    if (attempts < max_attempts) hedge_timer.ArmAfter(loop_, hedge_delay);
  }
}

}  // namespace capstan::rpc
