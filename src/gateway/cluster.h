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
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/status.h"
#include "gateway/config.h"
#include "mesh/balancer.h"
#include "mesh/discovery.h"
#include "mesh/endpoint_target.h"
#include "net/event_loop.h"
#include "net/http2.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

// One connection to an upstream endpoint.
struct UpstreamConnection {
  std::shared_ptr<net::Socket> socket;
  std::shared_ptr<mesh::EndpointState> endpoint;
  net::EventLoop::Clock::time_point created;
  net::EventLoop::Clock::time_point idle_since;
  uint64_t requests = 0;  // served on it so far (0: fresh)
};

class ClusterLoop {
 public:
  ClusterLoop(net::EventLoop* loop, const ClusterConfig* config);
  ~ClusterLoop();

  // Replaces the endpoint set (states of endpoints that stay are kept;
  // idle connections to endpoints that left are closed).
  void Update(std::vector<mesh::Endpoint> endpoints);
  // An endpoint for a request: not in `tried`, breaker allowing calls.
  // Null when none is left.
  std::shared_ptr<mesh::EndpointState> Pick(
      uint64_t hash, const absl::flat_hash_set<const mesh::EndpointState*>& tried);
  // An idle connection to `endpoint` that is still open, else a new one
  // (within connect_timeout). Counts against limits.max_connections.
  net::Task<absl::StatusOr<UpstreamConnection>> Acquire(
      std::shared_ptr<mesh::EndpointState> endpoint);
  // Gives a connection back after a request: kept idle when `reusable` and
  // within the pool's bounds, else closed.
  void Release(UpstreamConnection conn, bool reusable);
  // HTTP/2 clusters: the loop's session to `endpoint` if it can take
  // another stream, else a new one (connected, started and driven by a
  // coroutine of its own until it ends).
  net::Task<absl::StatusOr<std::shared_ptr<net::Http2Session>>> AcquireHttp2(
      const std::shared_ptr<mesh::EndpointState>& endpoint);

  // Active health checking (the cluster's checker posts each transition to
  // every loop). An unhealthy endpoint is passed over, unless every
  // endpoint is unhealthy: then all are used (Envoy's panic mode: better a
  // chance than a certain 503).
  void SetHealthy(const std::string& endpoint_id, bool healthy);
  bool healthy(const std::string& endpoint_id) const { return !unhealthy_.contains(endpoint_id); }

  bool has_endpoints() const { return !endpoints_.empty(); }
  size_t endpoint_count() const { return endpoints_.size(); }
  const std::vector<std::shared_ptr<mesh::EndpointState>>& endpoints() const { return endpoints_; }
  // Requests being forwarded now (for limits.max_requests).
  int active_requests = 0;
  int open_connections() const { return open_connections_; }
  size_t idle_connections() const;

 private:
  void CloseIdle(const std::string& endpoint_id);

  net::EventLoop* loop_;
  const ClusterConfig* config_;
  std::vector<std::shared_ptr<mesh::EndpointState>> endpoints_;
  std::unique_ptr<mesh::Balancer> balancer_;
  absl::flat_hash_map<std::string, std::vector<UpstreamConnection>> idle_;
  absl::flat_hash_map<std::string, std::shared_ptr<net::Http2Session>> http2_;
  absl::flat_hash_set<std::string> unhealthy_;
  int open_connections_ = 0;
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
