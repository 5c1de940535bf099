// Gateway: the L7 reverse proxy. Listeners accept HTTP/1.1 (and TLS) on
// every loop of a LoopGroup (SO_REUSEPORT); each request is matched against
// the route table, forwarded to a cluster's endpoint over a pooled upstream
// connection, and the response streamed back. How a request flows, in
// src/gateway/README.md; every option, in docs/gateway.md.
//
//   auto group = net::LoopGroup::Start({.threads = 2}).value();
//   auto gateway = gateway::Gateway::Start(config, group.get()).value();
//   ...
//   gateway->Reload(new_config);          // new requests use it; none dropped
//   gateway->Shutdown(std::chrono::seconds(15));
//
// Configuration is a snapshot (route table + clusters) that each loop holds
// its own reference to; Reload builds a new snapshot (keeping clusters whose
// configuration did not change, with their pools) and posts it to every
// loop. A request keeps the snapshot it started with.
//
// Thread-safety: Start, Reload, Shutdown and stats from any thread but the
// group's loops.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "gateway/cluster.h"
#include "gateway/config.h"
#include "gateway/router.h"
#include "gateway/stats.h"
#include "net/http_server.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"
#include "net/tls.h"

namespace capstan::gateway {

class L4Proxy;            // l4_proxy.h
class ExperimentRouting;  // experiment_routing.h

// A downstream connection as the gateway's shutdown sees it (loop thread).
// Lives in the connection's coroutine frame, linked into its loop's list.
struct ConnectionControl {
  net::Socket* socket = nullptr;
  bool idle = true;  // waiting for a request's first byte: close at once
  // Asks the connection to end gracefully (HTTP/2: GOAWAY); null for
  // HTTP/1.1, which answers its current request with Connection: close.
  std::function<void()> drain;
  ConnectionControl* prev = nullptr;
  ConnectionControl* next = nullptr;
};

// What every loop reads per request: immutable once published.
struct Snapshot {
  GatewayConfig config;
  std::shared_ptr<const RouteTable> routes;
  absl::flat_hash_map<std::string, std::shared_ptr<Cluster>> clusters;
  std::vector<RouteStats*> route_stats;  // by Route::index()
  // Per listener: its TLS context, or null for clear text.
  std::vector<std::shared_ptr<const net::TlsContext>> listener_tls;
  absl::flat_hash_map<std::string, ClusterStats*> cluster_stats;
};

struct GatewayStats {
  uint64_t requests = 0;
  uint64_t responses_2xx = 0, responses_3xx = 0, responses_4xx = 0, responses_5xx = 0;
  uint64_t upstream_connect_failures = 0;
  uint64_t upstream_resets = 0;
  uint64_t retries = 0;
  uint64_t bad_requests = 0;            // refused by the codec (framing, limits)
  uint64_t downstream_connections = 0;  // open now
  uint64_t parked_connections = 0;      // of them: idle, kept as a bare fd
};

class Gateway {
 public:
  // `experiments` (may be null) assigns the requests of routes that split by
  // experiment; it must outlive the gateway.
  static absl::StatusOr<std::unique_ptr<Gateway>> Start(GatewayConfig config, net::LoopGroup* group,
                                                        ExperimentRouting* experiments = nullptr);
  ~Gateway();  // out of line: L4Proxy is incomplete here
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Applies a new configuration to new requests. Listeners are fixed at
  // Start (a changed listener list is refused).
  absl::Status Reload(GatewayConfig config);
  // Rebuilds the TLS contexts from the certificate files with the current
  // configuration (what SIGHUP or a changed file asks for).
  absl::Status ReloadCertificates();
  // The configuration new requests use now.
  GatewayConfig config() const;
  // Stops accepting, asks clients to go (Connection: close on the next
  // response), gives requests in flight `grace`, then closes everything.
  void Shutdown(std::chrono::milliseconds grace);

  // The bound ports, in listener order (port 0 in the config picks one).
  const std::vector<int>& ports() const { return ports_; }
  // The registry /metrics renders, for servers beside the proxy (the DNS
  // server) to add their metrics to.
  metrics::Registry& metrics_registry() { return metrics_.registry(); }
  // The bound ports of the tcp listeners (L4), in their order.
  const std::vector<int>& tcp_ports() const;
  // The admin endpoint's port (0: none).
  int admin_port() const { return admin_ != nullptr ? admin_->port() : 0; }
  GatewayStats stats() const;
  // /status: routes, clusters and their endpoints (breaker state, pooled
  // connections) as JSON, read on the first loop.
  std::string StatusJson();

  // ---- internals shared by the protocol handlers (loop threads)
  struct LoopState;
  struct Counters {
    std::atomic<uint64_t> requests{0}, s2xx{0}, s3xx{0}, s4xx{0}, s5xx{0};
    std::atomic<uint64_t> connect_failures{0}, resets{0}, retries{0}, bad_requests{0};
    std::atomic<uint64_t> downstream_connections{0};
    std::atomic<uint64_t> parked_connections{0};  // of downstream_connections
    void CountStatus(int status);
  };

 private:
  explicit Gateway(net::LoopGroup* group);
  absl::StatusOr<std::shared_ptr<const Snapshot>> BuildSnapshot(GatewayConfig config,
                                                                const Snapshot* previous);
  void Publish(std::shared_ptr<const Snapshot> snapshot);
  net::Task<void> AcceptLoop(LoopState* state, size_t listener_index, net::Listener* listener);
  // `resumed`: a parked HTTP/1.1 connection coming back (counted already,
  // clear text, no protocol to sniff).
  net::Task<void> ServeConnection(LoopState* state, size_t listener_index,
                                  std::shared_ptr<net::Socket> socket, bool resumed = false);
  // Parking (see ParkedConnection in gateway.cc): an idle clear-text
  // HTTP/1.1 connection is kept as its fd until bytes come back.
  struct ParkedConnection;
  void Park(LoopState* state, size_t listener_index, int fd, Duration idle_left);
  static void OnParkedReady(net::FdWaiter* waiter, int result);
  void TaskEnded();

  net::LoopGroup* group_;
  ExperimentRouting* experiments_ = nullptr;
  GatewayMetrics metrics_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<net::HttpServer> admin_;
  std::vector<std::unique_ptr<LoopState>> loops_;
  // The TCP listeners (after loops_: it reads their snapshots).
  std::unique_ptr<L4Proxy> l4_;
  std::vector<int> ports_;
  // Held through a whole Reload, so a certificate reload cannot publish a
  // configuration older than a concurrent live update's.
  std::mutex reload_mu_;
  mutable std::mutex mu_;  // guards current_
  std::shared_ptr<const Snapshot> current_;
  Counters counters_;
  bool shut_down_ = false;
  std::atomic<bool> draining_{false};
  std::atomic<int> tasks_{0};
  std::mutex drain_mu_;
  std::condition_variable drained_;
};

}  // namespace capstan::gateway
