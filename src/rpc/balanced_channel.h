// BalancedChannel: calls to a service, spread over the endpoints a
// mesh::EndpointSource reports (static list, DNS, the store's registry), on
// one event loop. It has the Channel's Call and stream templates, so
// generated clients take it as is:
//
//   auto source = mesh::NewEndpointSource("store://127.0.0.1:2379/services/echo").value();
//   auto channel = rpc::BalancedChannel::Create(loop, std::move(source), {.balancer = "p2c"});
//   EchoClientT<rpc::BalancedChannel> echo(channel);
//   auto reply = co_await echo.Echo(request, {.timeout = 50ms});
//
// Per call: pick an endpoint whose circuit breaker lets calls through (and
// not ejected as an outlier), send on that endpoint's Channel, record the
// outcome (latency EWMA, breaker, outlier counters). A failed call is tried
// again on another endpoint when that is safe (the server did not run it,
// or the method is idempotent; see docs/rpc-protocol.md's Retry column),
// within max_attempts, the call's deadline and the retry budget. With
// hedge_delay set, a call unanswered after that long is sent to a second
// endpoint too (budget permitting); the first answer wins, the rest are
// cancelled.
//
// The governance (endpoint set, pick, outcome records, retry and hedge
// decisions) is mesh::EndpointPool<Channel>'s; this class says what an RPC
// outcome means for it and sends the attempts.
//
// Endpoint set changes apply between calls: a removed endpoint's Channel
// lives until its calls in flight end; they are not dropped. Options can be
// replaced while calls run (SetPolicy; mesh::PolicyWatcher pushes a
// service's policy from the store): new calls follow them.
//
// Thread-safety: like Channel, one loop; call it there. Create from any
// thread. Keep the shared_ptr while calls run.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mesh/balancer.h"
#include "mesh/circuit_breaker.h"
#include "mesh/discovery.h"
#include "mesh/endpoint_pool.h"
#include "mesh/endpoint_target.h"
#include "mesh/outlier.h"
#include "mesh/policy.h"
#include "mesh/retry_budget.h"
#include "net/event_loop.h"
#include "net/task.h"
#include "rpc/channel.h"

namespace capstan::rpc {

struct BalancedChannelOptions {
  std::string balancer = "p2c";
  ChannelOptions channel;
  mesh::CircuitBreakerOptions breaker;
  mesh::OutlierOptions outlier;
  mesh::RetryBudgetOptions retry_budget;
  // The first try plus retries and hedges.
  int max_attempts = 3;
  // Before a retry: doubling from initial_retry_backoff up to
  // max_retry_backoff, each with +-50% jitter. The first retry of a call
  // the server never ran (connection refused, GOAWAY) goes at once.
  Clock::duration initial_retry_backoff = std::chrono::milliseconds(10);
  Clock::duration max_retry_backoff = std::chrono::milliseconds(500);
  // Zero: no hedging. Otherwise a call unanswered for this long is also
  // sent to another endpoint (up to max_attempts copies in all).
  Clock::duration hedge_delay = Clock::duration::zero();
  // A call made before the source's first answer waits this long for it
  // (or until its deadline) before failing with UNAVAILABLE.
  Clock::duration wait_for_endpoints = std::chrono::seconds(5);
  // Zero: none. The deadline of a call whose options bring none.
  Clock::duration timeout = Clock::duration::zero();
  // Zero: none. Each attempt ends after this long even when the call's
  // deadline is further away (DEADLINE_EXCEEDED; retried for idempotent
  // calls).
  Clock::duration per_try_timeout = Clock::duration::zero();

  // The governance part, as the pool takes it.
  mesh::EndpointPoolOptions PoolOptions() const;
};

// One endpoint as the channel sees it (for /status and tests).
struct BalancedEndpointInfo {
  mesh::Endpoint endpoint;
  int outstanding = 0;
  double ewma_latency_ms = 0;
  const char* breaker = "closed";
  bool ejected = false;
  bool connected = false;
  uint64_t calls = 0;
  uint64_t failures = 0;
};

using BalancedChannelStats = mesh::EndpointPoolStats;

class BalancedChannel : public std::enable_shared_from_this<BalancedChannel>,
                        public StreamOpeners<BalancedChannel> {
 public:
  // The source starts at once; its updates reach the loop by Post.
  static absl::StatusOr<std::shared_ptr<BalancedChannel>> Create(
      net::EventLoop* loop, std::unique_ptr<mesh::EndpointSource> source,
      BalancedChannelOptions options = {});
  // Stops the source, which may block its thread briefly: a store source
  // waits for its watch stream to close (and for a listing in progress,
  // bounded by the store client's timeout). Drop channels at shutdown, not
  // per request.
  ~BalancedChannel();
  BalancedChannel(const BalancedChannel&) = delete;
  BalancedChannel& operator=(const BalancedChannel&) = delete;

  net::EventLoop* loop() const { return loop_; }

  net::Task<CallResult> CallBytes(std::string_view method, net::Buffer request,
                                  const CallOptions& options = {});

  // `request` is read when the call is awaited: it must live until then.
  template <typename Request, typename Response>
  net::Task<absl::StatusOr<Response>> Call(std::string_view method, const Request& request,
                                           CallOptions options = {}) {
    co_return ParseResponse<Response>(
        co_await CallBytes(method, SerializeToBuffer(request), options));
  }

  // A streaming call on one endpoint picked as for a unary call. Only its
  // opening is retried (on another endpoint, when it could not be sent);
  // once open, the stream is bound to its endpoint. Like Channel's: never
  // null, and a stream that could not open has ended (Finish says why).
  net::Task<std::unique_ptr<ClientStream>> OpenStream(std::string_view method,
                                                      const CallOptions& options = {},
                                                      net::Buffer* request = nullptr);

  // Loop thread. Replaces the endpoint set (what the source's updates do;
  // public for tests and for callers that manage endpoints themselves).
  void UpdateEndpoints(std::vector<mesh::Endpoint> endpoints);

  // Loop thread. Replaces the governance options (balancer, attempts,
  // back-off, hedging, budget, breaker, outlier, timeouts); the channel
  // options of connections already made stay. INVALID_ARGUMENT (and the
  // old options stay) when they cannot work.
  absl::Status SetPolicy(const mesh::EndpointPoolOptions& options);

  // Loop thread. Follows `service`'s policy document in the store: every
  // change the watcher accepts replaces the governance options (keeping
  // the channel's wait_for_endpoints); deleting the document restores the
  // options the channel was created with. The watcher must outlive the
  // channel, and the channel is then destroyed on its loop.
  void FollowPolicy(mesh::PolicyWatcher& watcher, const std::string& service);

  // Loop thread.
  std::vector<BalancedEndpointInfo> Endpoints();
  const BalancedChannelStats& stats() const { return pool_->stats(); }
  const mesh::EndpointPoolOptions& policy() const { return pool_->options(); }
  std::string Describe() const;

 private:
  using Pool = mesh::EndpointPool<Channel>;
  using Member = Pool::Member;
  struct HedgeState;
  BalancedChannel(net::EventLoop* loop, std::unique_ptr<Pool> pool,
                  std::unique_ptr<mesh::EndpointSource> source);

  // The call's deadline from its options (or the policy's timeout).
  Clock::time_point DeadlineOf(const CallOptions& options) const;
  // Waits for the source's first set; false with *failure when none came.
  net::Task<bool> ReadyToCall(std::string_view method, Clock::time_point deadline,
                              CallResult* failure);
  net::Task<CallResult> Attempt(std::shared_ptr<Member> member, std::string_view method,
                                net::Buffer request, CallOptions options,
                                Clock::time_point deadline);
  net::Task<CallResult> CallWithRetries(std::string_view method, const net::Buffer& request,
                                        const CallOptions& options, Clock::time_point deadline);
  net::Task<CallResult> CallHedged(std::string_view method, const net::Buffer& request,
                                   const CallOptions& options, Clock::time_point deadline);
  static net::Task<void> RunHedgeCopy(std::shared_ptr<BalancedChannel> self,
                                      std::shared_ptr<HedgeState> state,
                                      std::shared_ptr<Member> member, std::string method,
                                      net::Buffer request, CallOptions options,
                                      Clock::time_point deadline, size_t index);
  CallResult NoEndpoint(std::string_view method);

  net::EventLoop* loop_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<mesh::EndpointSource> source_;
  std::string source_description_;
  // The options the channel was created with: what a deleted policy
  // returns to.
  mesh::EndpointPoolOptions own_options_;
  std::unique_ptr<mesh::PolicyWatcher::Subscription> policy_subscription_;
};

}  // namespace capstan::rpc
