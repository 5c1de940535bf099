// DnsServer: answers DNS over UDP and TCP on one port from a ZoneSet that
// can be replaced at any time (a zone reload, a registry change).
//
// Both run on the event loops of the group it is given (the gateway's), as
// the HTTP and L4 listeners do: one runtime, one set of threads.
// UDP: a socket per loop (`udp_sockets` of them, by default one for every
// loop; SO_REUSEPORT, the kernel spreads clients), each served by a
// coroutine on its loop that waits for the socket to be readable and then
// takes up to 64 datagrams per system call (recvmmsg), answers them into a
// per-socket buffer and sends the answers with one sendmmsg (or one per
// `udp_answer_slice` queries; net/udp_socket.h). After a full batch it lets the loop's other work
// run before the next. TCP: a listener on every loop of the group (SO_REUSEPORT), a coroutine per
// connection reading length-prefixed queries (RFC 1035 section 4.2.2, pipelined, answered in order;
// RFC 7766), closed after `tcp_idle_timeout` without a query.
//
//   auto server = dns::DnsServer::Start({.host = "127.0.0.1", .port = 5353}, loops, zones);
//   server->SetZones(new_zones);   // any thread; the next batch uses them
//   server->Stop();                // closes UDP and TCP, waits for their coroutines
//
// Thread-safety: SetZones, stats and Stop from any thread. The zone set is
// published under a mutex with a generation counter: each UDP coroutine
// looks at the counter once per batch and copies the pointer only when it
// moved.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"
#include "gateway/dns/answer.h"
#include "gateway/dns/latency.h"
#include "gateway/dns/rrl.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/udp_socket.h"

namespace capstan::gateway::dns {

struct DnsServerOptions {
  std::string host = "127.0.0.1";
  int port = 5353;  // 0 picks one (the same for UDP and TCP)
  // UDP sockets, one per loop from the first (0: one on every loop of the
  // group; more than the loops is capped at the loops: a second socket on
  // a loop adds no CPU).
  int udp_sockets = 0;
  // Answers of a UDP batch go out every this many queries (1..64) instead
  // of all after the whole batch, so under a burst the first query of a
  // full batch does not wait for the other 63 to be answered. Each slice is
  // a sendmmsg and a wake-up of the clients it reaches: 16 costs about 8%
  // more CPU per query than 64 on loopback and made no difference to the
  // p99 measured (docs/benchmarks/dns.md), hence the default of one
  // sendmmsg per batch.
  int udp_answer_slice = 64;
  // Measures, per UDP query, how long it waited in the socket before it was
  // read (from the kernel's arrival time, SO_TIMESTAMPNS) and how long the
  // server took from reading it to handing its answer to the kernel;
  // quantiles in /metrics (capstan_dns_udp_latency_microseconds). Costs a
  // little CPU per query: off by default, for diagnosing tail latency.
  bool udp_latency_metrics = false;
  AnswerOptions answer;
  RrlOptions rrl;
  // TCP connections open at once across the server; more are closed at
  // accept.
  size_t max_tcp_connections = 1024;
  std::chrono::milliseconds tcp_idle_timeout{10000};
};

// Quantiles in microseconds of the udp_latency_metrics measurement, over
// every UDP socket; zero when off.
struct DnsUdpLatency {
  uint64_t count = 0;
  // Arrival in the socket (kernel time) to the recvmmsg that read it.
  double socket_wait_p50 = 0, socket_wait_p99 = 0, socket_wait_p999 = 0;
  // recvmmsg returned to the sendmmsg that carried the answer returned.
  double in_server_p50 = 0, in_server_p99 = 0, in_server_p999 = 0;
};

struct DnsServerStats {
  uint64_t udp_queries = 0;
  uint64_t udp_batches = 0;  // recvmmsg calls that returned queries
  uint64_t tcp_queries = 0;
  uint64_t truncated = 0;
  uint64_t nxdomain = 0;
  uint64_t refused = 0;
  uint64_t rrl_dropped = 0;
  uint64_t rrl_slipped = 0;
  uint64_t tcp_connections_refused = 0;
};

class DnsServer {
 public:
  static absl::StatusOr<std::unique_ptr<DnsServer>> Start(DnsServerOptions options,
                                                          net::LoopGroup* loops,
                                                          std::shared_ptr<const ZoneSet> zones);
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  int port() const { return port_; }
  void SetZones(std::shared_ptr<const ZoneSet> zones);
  std::shared_ptr<const ZoneSet> zones() const;
  DnsServerStats stats() const;
  DnsUdpLatency udp_latency() const;
  // Adds the server's counters to a registry (capstan_dns_*); they stay
  // readable after the server is gone (the registry shares them).
  void RegisterMetrics(metrics::Registry* registry) const;
  // Idempotent.
  void Stop();

 private:
  struct Counters {
    std::atomic<uint64_t> udp_queries{0}, udp_batches{0}, tcp_queries{0}, truncated{0}, nxdomain{0},
        refused{0}, rrl_dropped{0}, rrl_slipped{0}, tcp_connections_refused{0};
    // udp_latency_metrics: one pair per UDP socket (written by its loop),
    // made before the sockets serve and not resized after.
    struct UdpLatencyHistograms {
      LatencyHistogram socket_wait, in_server;
    };
    std::vector<std::unique_ptr<UdpLatencyHistograms>> udp_latency;
    DnsUdpLatency UdpLatency() const;
  };
  struct LoopState;
  struct UdpState;

  DnsServer(DnsServerOptions options, net::LoopGroup* loops);
  static absl::StatusOr<std::unique_ptr<DnsServer>> StartOnce(DnsServerOptions options,
                                                              net::LoopGroup* loops,
                                                              std::shared_ptr<const ZoneSet> zones);
  net::Task<void> ServeUdp(UdpState* state);
  // Answers datagram i of the socket's batch into its reply slot (or
  // leaves it without a reply: not a query, rate limited).
  void AnswerUdp(UdpState* state, const ZoneSet& zones, int i, uint64_t now);
  net::Task<void> AcceptLoop(LoopState* state);
  net::Task<void> ServeTcp(LoopState* state, std::shared_ptr<net::Socket> socket);
  void Count(const AnswerResult& r);
  void TaskEnded();

  DnsServerOptions options_;
  net::LoopGroup* loops_;
  int port_ = 0;
  // Shared with the metrics registry, which may outlive the server.
  std::shared_ptr<Counters> counters_ = std::make_shared<Counters>();

  mutable std::mutex zones_mu_;
  std::shared_ptr<const ZoneSet> zones_;  // guarded by zones_mu_
  std::atomic<uint64_t> zones_generation_{0};

  std::vector<std::unique_ptr<UdpState>> udp_states_;
  std::vector<std::unique_ptr<LoopState>> loop_states_;
  std::atomic<size_t> tcp_connections_{0};

  std::mutex tasks_mu_;
  std::condition_variable tasks_done_;
  int tasks_ = 0;  // guarded by tasks_mu_: UDP servers, accept loops and connections running
  bool stopped_ = false;
};

}  // namespace capstan::gateway::dns
