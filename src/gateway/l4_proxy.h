// L4Proxy: the gateway's TCP listeners (`tcp_listeners:` in the gateway
// configuration). Each accepted connection is forwarded byte for byte to one
// endpoint of a cluster from the same `clusters:` list the L7 routes use
// (endpoints from static lists, DNS or the store's registry; the cluster's
// balancer, Maglev hashing the client address by default for L4 — the
// cluster's `hash_on` header/cookie modes have nothing to hash here).
//
//   L4Proxy l4(&registry, {{loop0, &snapshot0}, {loop1, &snapshot1}});
//   RETURN_IF_ERROR(l4.Start(config));         // binds on every loop
//   ... l4.OnSnapshot(i) on loop i after each new snapshot ...
//   l4.StopAccepting(); l4.WaitIdle(deadline); l4.CloseAll(); l4.WaitIdle({});
//
// A connection:
//  - picks an endpoint (skipping unhealthy ones and open breakers) and
//    connects within the connect timeout; a failed connect is retried on
//    another endpoint (connect_attempts), nothing having been sent yet;
//  - writes a PROXY protocol v1 or v2 header first when asked;
//  - copies both ways with backpressure: bytes received on one socket are
//    moved, as buffer slices (no copy in user space), to the other's
//    output; a direction reads no further ahead than `buffer` of a slow
//    receiver;
//  - passes a half-close on: the peer's FIN ends that direction once its
//    bytes are sent, with shutdown(SHUT_WR) on the other socket; the other
//    direction goes on until its own FIN. A reset ends both;
//  - counts against its cluster's `limits.max_connections` (all loops and
//    listeners together, as HAProxy's per-server maxconn and Envoy's
//    cluster circuit breaker for tcp_proxy): past it the client is closed
//    before any upstream connect, not queued;
//  - is closed after `idle_timeout` without a byte either way;
//  - with `splice: on` (the listener's, else its cluster's) moves its
//    bytes with splice(2) once both sockets are quiet (l4_relay.h,
//    l4_splice.h): what arrived while connecting, a greeting or a first
//    request, goes the copy way, then both fds leave the loop's engine for
//    a SpliceRelay; with `splice: auto` (the default) it copies until it
//    has relayed `splice_after` bytes, then does the same. Where that
//    cannot happen (bytes keep arriving during the hand-over, a FIN came
//    first, no pipe could be made, splice refuses the sockets) the
//    connection stays on the copy path
//    (capstan_gateway_tcp_splice_fallbacks_total). Everything above holds
//    on every path;
//  - keeps its endpoint for life (connection tracking). After a new
//    configuration or an endpoint set update, a connection whose endpoint
//    left its cluster (or whose cluster is gone) is closed at once; the
//    others are not touched.
//
// Thread-safety: Start, StopAccepting, WaitIdle, CloseAll and the counters
// from any thread but the loops'; OnSnapshot and Sweep on loop i's thread.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"
#include "gateway/config.h"
#include "gateway/l4_relay.h"
#include "net/event_loop.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

struct Snapshot;

// PROXY protocol headers (HAProxy's proxy-protocol.txt), telling the
// upstream who the client is: `source` is the client's address, `destination`
// the address it connected to (the gateway's listener). Addresses of other
// families than IPv4/IPv6 give "PROXY UNKNOWN\r\n" (v1) or a LOCAL command
// (v2). Both families must match, else UNKNOWN/LOCAL too.
std::string ProxyProtocolV1(const sockaddr_storage& source, const sockaddr_storage& destination);
std::string ProxyProtocolV2(const sockaddr_storage& source, const sockaddr_storage& destination);

// How a tcp listener's connections move their bytes (l4_relay.h): the
// listener's `splice`, else its cluster's (`cluster_splice`): `off` copies,
// `on` splices from the start, `auto` copies the first `splice_after` bytes
// and splices the rest (measured: docs/benchmarks/l4.md, "splice or copy").
RelayPolicy::Mode RelayModeFor(const TcpListenerConfig& listener,
                               const std::string& cluster_splice);

class L4Proxy {
 public:
  // One per loop: the loop and where the gateway keeps that loop's current
  // snapshot (read on the loop's thread).
  struct LoopView {
    net::EventLoop* loop;
    const std::shared_ptr<const Snapshot>* snapshot;
  };
  L4Proxy(metrics::Registry* registry, std::vector<LoopView> loops);
  ~L4Proxy();
  L4Proxy(const L4Proxy&) = delete;
  L4Proxy& operator=(const L4Proxy&) = delete;

  // Binds every tcp listener of `config` on every loop (SO_REUSEPORT).
  absl::Status Start(const GatewayConfig& config);
  // Bound ports, in tcp_listeners order.
  const std::vector<int>& ports() const { return ports_; }

  // Loop `i`'s thread, after it took a new snapshot: hooks the endpoint
  // updates of the clusters the tcp listeners name, then sweeps.
  void OnSnapshot(int i);
  // Loop `i`'s thread: closes the connections whose endpoint is no longer
  // in its cluster (or whose cluster left the configuration).
  void Sweep(int i);

  // Shutdown, in order: no new connections; wait for connections to end
  // (until `deadline`; true when none is left); close the rest.
  void StopAccepting();
  bool WaitIdle(std::chrono::steady_clock::time_point deadline);
  void CloseAll();

  // Connections open now (all listeners).
  int64_t active_connections() const;

 private:
  struct Connection;
  struct LoopState;
  struct ListenerState;
  net::Task<void> AcceptLoop(LoopState* state, size_t listener_index, net::Listener* listener);
  net::Task<void> Serve(LoopState* state, size_t listener_index,
                        std::shared_ptr<net::Socket> client);
  void TaskEnded();
  // The count of TCP connections open to `cluster` now (all loops); kept
  // by name, so it carries across configurations that keep the cluster.
  std::shared_ptr<std::atomic<int64_t>> ClusterConnections(const std::string& cluster);

  std::vector<std::unique_ptr<LoopState>> loops_;
  std::vector<std::unique_ptr<ListenerState>> listeners_;
  metrics::Registry* registry_;
  std::vector<int> ports_;
  std::atomic<int> tasks_{0};
  std::mutex cluster_connections_mu_;
  std::map<std::string, std::shared_ptr<std::atomic<int64_t>>> cluster_connections_;
  std::mutex idle_mu_;
  std::condition_variable idle_;
};

}  // namespace capstan::gateway
