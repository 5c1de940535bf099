// Cluster: a named set of upstream endpoints and how the gateway reaches
// them — where the endpoints come from (static list, DNS, the store's
// registry through mesh::EndpointSource), which one takes a request
// (mesh::Balancer, skipping endpoints whose circuit breaker is open), and a
// pool of idle HTTP/1.1 keep-alive connections per endpoint.
//
// A Cluster is shared by every loop; what changes per request lives in its
// per-loop part (ClusterLoop), touched only by that loop's thread, so the
// request path takes no lock: endpoint sets arrive on the source's thread
// and are posted to each loop.
//
//   auto cluster = Cluster::Create(config, group).value();
//   ClusterLoop& here = cluster->on(loop_index);
//   std::shared_ptr<mesh::EndpointState> e = here.Pick(hash, tried);
//   auto conn = co_await here.Acquire(e);   // idle or new connection
//   ...
//   here.Release(std::move(conn), reusable);
//
// Thread-safety: Cluster is immutable after Create (but for the per-loop
// parts, each owned by its loop).
#pragma once

#include <chrono>
#include <coroutine>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/status.h"
#include "gateway/config.h"
#include "mesh/balancer.h"
#include "mesh/discovery.h"
#include "mesh/endpoint_pool.h"
#include "mesh/endpoint_target.h"
#include "net/event_loop.h"
#include "net/http2.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"
#include "net/tls.h"

namespace capstan::gateway {

// What the pool keeps per endpoint: its idle HTTP/1.1 keep-alive
// connections and its HTTP/2 session. Lives on the loop; closed when the
// endpoint leaves the set and its last request ends.
struct EndpointConnections;
using EndpointPool = mesh::EndpointPool<EndpointConnections>;
using PooledEndpoint = EndpointPool::Member;

// One connection to an upstream endpoint.
// How far an HTTP/1.1 upstream connection is read ahead of the client
// (exactly: Socket::set_input_limit), set per request by the client's
// protocol. It is what a stuck client makes the gateway hold per upstream
// request. An HTTP/1.1 client is one request per connection (its own
// output is bounded separately), and a larger read-ahead lets a 64 KiB
// response cross in one turn: ~15% less CPU per request for 64 KiB bodies
// than at 64 KiB. An HTTP/2 client may hold 100 streams at a zero window,
// so its requests keep the smaller one.
inline constexpr size_t kUpstreamReadAheadForHttp1 = 256 << 10;
inline constexpr size_t kUpstreamReadAheadForHttp2 = 64 << 10;

struct UpstreamConnection {
  std::shared_ptr<net::Socket> socket;
  std::shared_ptr<PooledEndpoint> endpoint;  // while in use; null while idle
  net::EventLoop::Clock::time_point created;
  net::EventLoop::Clock::time_point idle_since;
  uint64_t requests = 0;  // served on it so far (0: fresh)
};

struct EndpointConnections {
  ~EndpointConnections();
  std::vector<UpstreamConnection> idle;
  std::shared_ptr<net::Http2Session> http2;
  // The loop's count of open upstream connections (shared: an endpoint that
  // drains may outlive its ClusterLoop).
  std::shared_ptr<int> open_connections;
};

// A cluster's part on one loop: governance by mesh::EndpointPool (the
// balancer's pick skipping open breakers and ejected outliers, outcome
// recording, the retry budget and back-off), plus the gateway's own
// connection handling per endpoint.
class ClusterLoop {
 public:
  // `tls`: the client context for `tls: true` clusters (else null).
  ClusterLoop(net::EventLoop* loop, const ClusterConfig* config,
              std::shared_ptr<const net::TlsContext> tls);
  ~ClusterLoop();

  // Replaces the endpoint set (endpoints that stay keep their records and
  // connections; those that left drain), then calls the on-update hook.
  void Update(std::vector<mesh::Endpoint> endpoints);
  // Called on the loop after each Update: the L4 proxy closes the
  // connections whose endpoint left (l4_proxy.h). One hook per loop part.
  void set_on_update(std::function<void()> hook) { on_update_ = std::move(hook); }
  // An endpoint for a request, not among `tried` unless every other is
  // unusable. Unhealthy endpoints (active checks) count as tried, so they
  // are used only when nothing else is (panic mode). Null when none.
  std::shared_ptr<PooledEndpoint> Pick(uint64_t hash,
                                       const std::vector<std::shared_ptr<PooledEndpoint>>& tried);
  // An idle connection to `endpoint` that is still open, else a new one
  // (within connect_timeout). Counts against limits.max_connections: at the
  // limit an idle connection to another endpoint is closed to make room;
  // when every connection is busy the request waits (limits.
  // max_pending_requests of them at most, each up to connect_timeout) for
  // one to be released. RESOURCE_EXHAUSTED with the limit's name
  // ("max_pending_requests", or "max_connections" after the wait) else.
  net::Task<absl::StatusOr<UpstreamConnection>> Acquire(std::shared_ptr<PooledEndpoint> endpoint);
  // Gives a connection back after a request: kept idle when `reusable` and
  // within the pool's bounds, else closed.
  void Release(UpstreamConnection conn, bool reusable);
  // HTTP/2 clusters: the endpoint's session if it can take another stream,
  // else a new one (connected, started and driven by a coroutine of its own
  // until it ends).
  net::Task<absl::StatusOr<std::shared_ptr<net::Http2Session>>> AcquireHttp2(
      const std::shared_ptr<PooledEndpoint>& endpoint);

  // Active health checking (the cluster's checker posts each transition to
  // every loop).
  void SetHealthy(const std::string& endpoint_id, bool healthy);
  bool healthy(const std::string& endpoint_id) const { return !unhealthy_.contains(endpoint_id); }

  EndpointPool& pool() { return *pool_; }
  bool has_endpoints() const { return pool_->size() > 0; }
  size_t endpoint_count() const { return pool_->size(); }
  // The current set, ordered by id (for /status and the health checker).
  std::vector<std::shared_ptr<PooledEndpoint>> endpoints() const;
  // Requests being forwarded now (for limits.max_requests).
  int active_requests = 0;
  int open_connections() const { return *open_connections_; }
  size_t idle_connections() const;

 private:
  // A connection to `e` (TLS started when the cluster wants it).
  net::Task<absl::StatusOr<std::shared_ptr<net::Socket>>> Connect(const mesh::Endpoint& e);
  // Closes one idle connection (any endpoint's); false if there is none.
  bool CloseAnIdleConnection();
  // A connection was released or closed: the oldest waiting request looks
  // again.
  void WakeAPendingRequest();

  // A request waiting for a connection slot (limits.max_pending_requests).
  struct PendingRequest {
    std::coroutine_handle<> handle;
    net::Timer* give_up = nullptr;
    bool timed_out = false;
  };
  struct PendingAwaiter {
    ClusterLoop* cluster;
    PendingRequest* request;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      request->handle = h;
      cluster->pending_.push_back(request);
    }
    void await_resume() const noexcept {}
  };

  net::EventLoop* loop_;
  const ClusterConfig* config_;
  std::shared_ptr<const net::TlsContext> tls_;
  std::shared_ptr<int> open_connections_ = std::make_shared<int>(0);
  std::unique_ptr<EndpointPool> pool_;
  absl::flat_hash_set<std::string> unhealthy_;
  std::deque<PendingRequest*> pending_;
  std::function<void()> on_update_;
};

class Cluster : public std::enable_shared_from_this<Cluster> {
 public:
  // Starts the endpoint source; static endpoints are in place when this
  // returns.
  static absl::StatusOr<std::shared_ptr<Cluster>> Create(ClusterConfig config,
                                                         net::LoopGroup* group);
  // Each per-loop part is destroyed on its loop (its sockets belong there).
  // REQUIRES: the loop group still runs.
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  const ClusterConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  // REQUIRES: on loop `i`'s thread.
  ClusterLoop& on(int i) { return *loops_[static_cast<size_t>(i)]; }
  std::string Describe() const;

 private:
  Cluster(ClusterConfig config) : config_(std::move(config)) {}
  // Probes every endpoint (as loop 0 sees the set) each interval and posts
  // transitions past the thresholds to every loop.
  static net::Task<void> CheckHealth(std::weak_ptr<Cluster> weak, net::EventLoop* loop);

  ClusterConfig config_;
  std::vector<std::unique_ptr<ClusterLoop>> loops_;
  std::vector<net::EventLoop*> event_loops_;
  // Updates are posted to the loops holding a weak_ptr to the cluster, so a
  // late one finds nothing to do.
  std::unique_ptr<mesh::EndpointSource> source_;
};

}  // namespace capstan::gateway
