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

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

// An endpoint of the set with its Channel. Calls hold it by shared_ptr, so
// one that leaves the set lives until its calls end.
struct BalancedChannel::Member : mesh::EndpointState, std::enable_shared_from_this<Member> {
  Member(mesh::Endpoint e, const mesh::CircuitBreakerOptions& breaker_options)
      : mesh::EndpointState(std::move(e), breaker_options) {}
  std::shared_ptr<Channel> channel;
  uint64_t calls = 0;
  uint64_t failures = 0;
};

// A call waiting for the source's first answer.
struct BalancedChannel::EndpointWaiter {
  explicit EndpointWaiter(absl::AnyInvocable<void()> on_timeout) : timer(std::move(on_timeout)) {}
  std::coroutine_handle<> handle;
  net::Timer timer;
};

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

absl::StatusOr<std::shared_ptr<BalancedChannel>> BalancedChannel::Create(
    net::EventLoop* loop, std::unique_ptr<mesh::EndpointSource> source,
    BalancedChannelOptions options) {
  absl::StatusOr<std::unique_ptr<mesh::Balancer>> balancer = mesh::NewBalancer(options.balancer);
  if (!balancer.ok()) return balancer.status();
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1 (the first try)");
  }
  std::shared_ptr<BalancedChannel> channel(
      new BalancedChannel(loop, *std::move(balancer), std::move(source), std::move(options)));
  std::weak_ptr<BalancedChannel> weak = channel;
  channel->source_->Start([loop, weak](std::vector<mesh::Endpoint> endpoints) {
    loop->Post([weak, endpoints = std::move(endpoints)]() mutable {
      if (auto self = weak.lock()) self->UpdateEndpoints(std::move(endpoints));
    });
  });
  return channel;
}

BalancedChannel::BalancedChannel(net::EventLoop* loop, std::unique_ptr<mesh::Balancer> balancer,
                                 std::unique_ptr<mesh::EndpointSource> source,
                                 BalancedChannelOptions options)
    : loop_(loop),
      balancer_(std::move(balancer)),
      source_(std::move(source)),
      source_description_(source_->Describe()),
      options_(std::move(options)),
      budget_(options_.retry_budget),
      outliers_(options_.outlier),
      rng_state_(reinterpret_cast<uintptr_t>(this) ^
                 static_cast<uint64_t>(Clock::now().time_since_epoch().count())) {}

BalancedChannel::~BalancedChannel() {
  // The source's thread may be posting an update: once it is gone, no more
  // arrive (and those posted find the channel gone).
  // (No call waits for endpoints here: each holds the channel.)
  source_.reset();
}

std::string BalancedChannel::Describe() const {
  return absl::StrCat(source_description_, " (", std::string(balancer_->name()), ")");
}

void BalancedChannel::UpdateEndpoints(std::vector<mesh::Endpoint> endpoints) {
  stats_.updates++;
  absl::flat_hash_map<std::string, std::shared_ptr<Member>> next;
  for (mesh::Endpoint& e : endpoints) {
    auto it = members_.find(e.id);
    if (it != members_.end() && it->second->endpoint.host == e.host &&
        it->second->endpoint.port == e.port) {
      it->second->endpoint.weight = e.weight;
      next[e.id] = std::move(it->second);
      continue;
    }
    auto member = std::make_shared<Member>(e, options_.breaker);
    member->channel = Channel::Create(loop_, e.host, e.port, options_.channel);
    next[e.id] = std::move(member);
  }
  if (members_.size() != next.size() || !endpoints.empty()) {
    CAPSTAN_LOG(debug, "endpoint set updated", "target", source_description_, "endpoints",
                next.size());
  }
  // Members left out here are released by this map; their calls in flight
  // hold them until they end.
  members_ = std::move(next);
  std::vector<mesh::EndpointState*> states;
  states.reserve(members_.size());
  for (auto& [id, m] : members_) states.push_back(m.get());
  balancer_->Update(states);
  have_endpoints_ = true;
  for (EndpointWaiter* w : std::exchange(endpoint_waiters_, {})) {
    w->timer.Cancel();
    loop_->Schedule(w->handle);
  }
}

std::vector<BalancedEndpointInfo> BalancedChannel::Endpoints() {
  std::vector<BalancedEndpointInfo> out;
  for (auto& [id, m] : members_) {
    out.push_back({.endpoint = m->endpoint,
                   .outstanding = m->outstanding,
                   .ewma_latency_ms = m->ewma_latency_ns / 1e6,
                   .breaker = mesh::CircuitBreaker::StateName(m->breaker.state()),
                   .ejected = outliers_.ejected(m->outlier),
                   .connected = m->channel->connected(),
                   .calls = m->calls,
                   .failures = m->failures});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.endpoint.id < b.endpoint.id; });
  return out;
}

net::Task<bool> BalancedChannel::WaitForEndpoints(Clock::time_point deadline) {
  if (have_endpoints_) co_return true;
  Clock::time_point until = std::min(deadline, Clock::now() + options_.wait_for_endpoints);
  struct Wait {
    BalancedChannel* self;
    EndpointWaiter* waiter;
    Clock::time_point until;
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

std::shared_ptr<BalancedChannel::Member> BalancedChannel::Pick(
    uint64_t hash, const std::vector<std::shared_ptr<Member>>& tried) {
  if (members_.empty()) return nullptr;
  if (outliers_.due()) {
    std::vector<mesh::OutlierStats*> all;
    all.reserve(members_.size());
    for (auto& [id, m] : members_) all.push_back(&m->outlier);
    if (int n = outliers_.MaybeEvaluate(all); n > 0) {
      CAPSTAN_LOG(info, "ejected outlier endpoints", "target", source_description_, "count", n);
    }
  }
  absl::flat_hash_set<const mesh::EndpointState*> exclude;
  for (const auto& m : tried) exclude.insert(m.get());
  // Two passes: first avoiding endpoints this call already tried, then (a
  // small set) any whose breaker lets it through.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      if (tried.empty()) break;
      for (const auto& m : tried) exclude.erase(m.get());
    }
    for (size_t i = 0; i <= members_.size(); ++i) {
      mesh::EndpointState* e = balancer_->Pick({.hash = hash, .exclude = &exclude});
      if (e == nullptr) break;
      auto* m = static_cast<Member*>(e);
      if (!outliers_.ejected(m->outlier) && m->breaker.Allow()) {
        return m->shared_from_this();
      }
      exclude.insert(e);
    }
  }
  return nullptr;
}

CallResult BalancedChannel::NoEndpoint(std::string_view method) {
  stats_.no_endpoint++;
  CallResult r;
  r.not_processed = true;
  if (!have_endpoints_) {
    r.status = absl::UnavailableError(
        absl::StrCat("no endpoints yet for ", std::string(method), " from ", source_description_));
  } else if (members_.empty()) {
    r.status = absl::UnavailableError(
        absl::StrCat("no endpoints for ", std::string(method), " in ", source_description_));
  } else {
    r.status = absl::UnavailableError(
        absl::StrCat("all ", members_.size(), " endpoints of ", source_description_,
                     " are refusing calls (circuit breakers open or ejected)"));
  }
  return r;
}

bool BalancedChannel::ShouldRetry(const CallResult& result, const CallOptions& options) const {
  if (result.status.ok()) return false;
  if (result.not_processed) return true;
  switch (result.status.code()) {
    case absl::StatusCode::kResourceExhausted:  // shed before running
      return true;
    case absl::StatusCode::kUnavailable:
      return options.idempotent;
    default:
      return false;
  }
}

Clock::duration BalancedChannel::RetryBackoff(int retry, const CallResult& last) {
  if (retry == 1 && last.not_processed) return Clock::duration::zero();
  Clock::duration base = options_.initial_retry_backoff;
  for (int i = 1; i < retry && base < options_.max_retry_backoff; ++i) base *= 2;
  base = std::min(base, options_.max_retry_backoff);
  double jitter = 0.5 + static_cast<double>(SplitMix(&rng_state_) >> 11) / 9007199254740992.0;
  return std::chrono::duration_cast<Clock::duration>(base * jitter);
}

net::Task<CallResult> BalancedChannel::Attempt(std::shared_ptr<Member> member,
                                               std::string_view method, net::Buffer request,
                                               CallOptions options, Clock::time_point deadline) {
  Clock::time_point start = Clock::now();
  if (deadline != Clock::time_point::max()) {
    options.timeout = std::max(deadline - start, Clock::duration(1));
  }
  member->outstanding++;
  member->calls++;
  CallResult result = co_await member->channel->CallBytes(method, std::move(request), options);
  member->outstanding--;
  bool abandoned = options.canceller != nullptr && options.canceller->cancelled() &&
                   result.status.code() == absl::StatusCode::kCancelled;
  if (abandoned) {
    member->breaker.RecordAbandoned();
  } else if (EndpointFailure(result.status)) {
    member->failures++;
    member->breaker.RecordFailure();
    member->outlier.Record(false);
  } else {
    member->breaker.RecordSuccess();
    member->outlier.Record(true);
    member->RecordLatency(Clock::now() - start);
  }
  co_return result;
}

Clock::time_point BalancedChannel::DeadlineOf(const CallOptions& options) {
  Clock::time_point deadline = Clock::time_point::max();
  if (options.timeout > Clock::duration::zero()) deadline = Clock::now() + options.timeout;
  if (options.parent != nullptr) deadline = std::min(deadline, options.parent->deadline());
  return deadline;
}

net::Task<bool> BalancedChannel::ReadyToCall(std::string_view method, Clock::time_point deadline,
                                             CallResult* failure) {
  stats_.calls++;
  // (No co_await inside && or ||: GCC 12 miscompiles it.)
  bool have_endpoints = have_endpoints_;
  if (!have_endpoints) have_endpoints = co_await WaitForEndpoints(deadline);
  if (!have_endpoints) {
    *failure = NoEndpoint(method);
    if (Clock::now() >= deadline) {
      failure->status = absl::DeadlineExceededError(
          absl::StrCat("deadline passed waiting for the first endpoints of ", source_description_));
    }
    co_return false;
  }
  budget_.RecordCall();
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
    std::shared_ptr<Member> member = Pick(options.hash, tried);
    if (member == nullptr) co_return ClientStream::Unsent(NoEndpoint(method));
    tried.push_back(member);
    member->calls++;
    CallOptions attempt_options = options;
    if (deadline != Clock::time_point::max()) {
      attempt_options.timeout = std::max(deadline - Clock::now(), Clock::duration(1));
    }
    net::Buffer copy = request != nullptr ? request->Share() : net::Buffer();
    std::unique_ptr<ClientStream> stream = co_await member->channel->OpenStream(
        method, attempt_options, request != nullptr ? &copy : nullptr);
    // How a stream ends says little about its endpoint (a watch may be
    // cancelled after an hour); opening it is what the breaker learns from.
    if (!stream->done()) {
      member->breaker.RecordSuccess();
      co_return stream;
    }
    CallResult result = co_await stream->Finish();  // not sent: why
    if (EndpointFailure(result.status)) {
      member->failures++;
      member->breaker.RecordFailure();
      member->outlier.Record(false);
    }
    if (!result.not_processed || attempt >= options_.max_attempts) {
      co_return ClientStream::Unsent(std::move(result));
    }
    if (!budget_.TryRetry()) {
      stats_.budget_refusals++;
      co_return ClientStream::Unsent(std::move(result));
    }
    stats_.retries++;
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
  if (options_.hedge_delay > Clock::duration::zero() && options_.max_attempts > 1) {
    co_return co_await CallHedged(method, request, options, deadline);
  }
  co_return co_await CallWithRetries(method, request, options, deadline);
}

net::Task<CallResult> BalancedChannel::CallWithRetries(std::string_view method,
                                                       const net::Buffer& request,
                                                       const CallOptions& options,
                                                       Clock::time_point deadline) {
  std::vector<std::shared_ptr<Member>> tried;
  for (int attempt = 1;; ++attempt) {
    CallResult result;
    std::shared_ptr<Member> member = Pick(options.hash, tried);
    if (member == nullptr) {
      result = NoEndpoint(method);
    } else {
      tried.push_back(member);
      result = co_await Attempt(std::move(member), method, request.Share(), options, deadline);
    }
    if (!ShouldRetry(result, options) || attempt >= options_.max_attempts) co_return result;
    Clock::duration backoff = RetryBackoff(attempt, result);
    if (Clock::now() + backoff >= deadline) co_return result;
    if (!budget_.TryRetry()) {
      stats_.budget_refusals++;
      result.status = absl::Status(
          result.status.code(),
          absl::StrCat(result.status.message(), " (not retried: retry budget exhausted)"));
      co_return result;
    }
    stats_.retries++;
    if (backoff > Clock::duration::zero()) co_await loop_->Sleep(backoff);
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
    std::shared_ptr<Member> member = Pick(options.hash, tried);
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
  net::Timer hedge_timer([&state] {
    state->hedge_due = true;
    state->Wake();
  });
  int attempts = 1;
  if (attempts < options_.max_attempts) hedge_timer.ArmAfter(loop_, options_.hedge_delay);
  CallResult last;
  while (true) {
    co_await HedgeState::Awaiter{state.get()};
    if (!state->answers.empty()) {
      CallResult result = std::move(state->answers.front());
      state->answers.pop_front();
      --in_flight;
      if (!ShouldRetry(result, options)) {
        hedge_timer.Cancel();
        co_return finish(std::move(result));
      }
      last = std::move(result);
      if (in_flight > 0) continue;  // another copy may still answer
      // Every copy failed in a way worth retrying: one more, now.
      hedge_timer.Cancel();
      if (attempts >= options_.max_attempts || Clock::now() >= deadline) co_return last;
      if (!budget_.TryRetry()) {
        stats_.budget_refusals++;
        co_return last;
      }
      if (!launch()) co_return last;
      stats_.retries++;
      ++attempts;
      if (attempts < options_.max_attempts) hedge_timer.ArmAfter(loop_, options_.hedge_delay);
      continue;
    }
    // The hedge delay passed without an answer.
    state->hedge_due = false;
    if (attempts >= options_.max_attempts) continue;
    if (!budget_.TryRetry()) {
      stats_.budget_refusals++;
      continue;
    }
    if (launch()) {
      stats_.hedges++;
      ++attempts;
    }
    if (attempts < options_.max_attempts) hedge_timer.ArmAfter(loop_, options_.hedge_delay);
  }
}

}  // namespace capstan::rpc
