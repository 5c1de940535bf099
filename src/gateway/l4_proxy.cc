#include "gateway/l4_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "gateway/cluster.h"
#include "gateway/gateway.h"
#include "gateway/intrusive_list.h"
#include "gateway/l4_splice.h"
#include "mesh/balancer.h"
#include "mesh/discovery.h"
#include "net/block_on.h"

namespace capstan::gateway {

// ---- PROXY protocol

namespace {

constexpr char kProxyV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                        '\n', 'Q',  'U',  'I',  'T',  '\n'};

std::string AddressText(const sockaddr_storage& a) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a)->sin_addr, text, sizeof(text));
  } else if (a.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr, text, sizeof(text));
  }
  return text;
}

uint16_t PortOf(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  return 0;
}

bool SameInetFamily(const sockaddr_storage& a, const sockaddr_storage& b) {
  return a.ss_family == b.ss_family && (a.ss_family == AF_INET || a.ss_family == AF_INET6);
}

}  // namespace

std::string ProxyProtocolV1(const sockaddr_storage& source, const sockaddr_storage& destination) {
  if (!SameInetFamily(source, destination)) return "PROXY UNKNOWN\r\n";
  return absl::StrCat("PROXY ", source.ss_family == AF_INET ? "TCP4 " : "TCP6 ",
                      AddressText(source), " ", AddressText(destination), " ", PortOf(source), " ",
                      PortOf(destination), "\r\n");
}

std::string ProxyProtocolV2(const sockaddr_storage& source, const sockaddr_storage& destination) {
  std::string out(kProxyV2Signature, sizeof(kProxyV2Signature));
  auto put16 = [&out](uint16_t v) {
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v & 0xff));
  };
  if (!SameInetFamily(source, destination)) {
    // LOCAL: the receiver uses the connection's own addresses.
    out.push_back('\x20');
    out.push_back('\x00');  // AF_UNSPEC, UNSPEC
    put16(0);
    return out;
  }
  out.push_back('\x21');  // version 2, PROXY
  if (source.ss_family == AF_INET) {
    out.push_back('\x11');  // AF_INET, STREAM
    put16(12);
    const auto* s = reinterpret_cast<const sockaddr_in*>(&source);
    const auto* d = reinterpret_cast<const sockaddr_in*>(&destination);
    out.append(reinterpret_cast<const char*>(&s->sin_addr), 4);
    out.append(reinterpret_cast<const char*>(&d->sin_addr), 4);
  } else {
    out.push_back('\x21');  // AF_INET6, STREAM
    put16(36);
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&source);
    const auto* d = reinterpret_cast<const sockaddr_in6*>(&destination);
    out.append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
    out.append(reinterpret_cast<const char*>(&d->sin6_addr), 16);
  }
  put16(PortOf(source));
  put16(PortOf(destination));
  return out;
}

// ---- the proxy

// A forwarded connection, in its Serve frame, linked into its loop's list
// (for the sweep after endpoint changes and for the shutdown).
struct L4Proxy::Connection {
  RelayedPair pair;  // pair.upstream is null until connected
  ListenerState* listener = nullptr;
  std::string cluster;
  mesh::Endpoint endpoint;  // the one it went to, for life
  Connection* prev = nullptr;
  Connection* next = nullptr;

  void Close() { pair.Close(); }
};

struct L4Proxy::LoopState {
  net::EventLoop* loop = nullptr;
  int index = 0;
  const std::shared_ptr<const Snapshot>* snapshot = nullptr;
  std::vector<std::unique_ptr<net::Listener>> listeners;
  Connection* connections = nullptr;
  PipePool pipes;  // the splice relays' spare pipes
};

struct L4Proxy::ListenerState {
  std::string name;
  std::atomic<int64_t> active{0};  // all loops, for max_connections
  metrics::Counter* accepted = nullptr;
  metrics::Counter* refused = nullptr;
  metrics::Counter* bytes_in = nullptr;   // client -> upstream
  metrics::Counter* bytes_out = nullptr;  // upstream -> client
  metrics::Counter* connect_failures = nullptr;
  metrics::Counter* no_endpoint = nullptr;
  metrics::Counter* idle_closed = nullptr;
  metrics::Counter* endpoint_gone = nullptr;
  metrics::Counter* cluster_full = nullptr;
  metrics::Counter* spliced = nullptr;
  metrics::Counter* splice_fallbacks = nullptr;
};

namespace {

bool PeerAddress(int fd, sockaddr_storage* peer) {
  socklen_t len = sizeof(*peer);
  return getpeername(fd, reinterpret_cast<sockaddr*>(peer), &len) == 0;
}

bool LocalAddress(int fd, sockaddr_storage* local) {
  socklen_t len = sizeof(*local);
  return getsockname(fd, reinterpret_cast<sockaddr*>(local), &len) == 0;
}

}  // namespace

RelayPolicy::Mode RelayModeFor(const TcpListenerConfig& listener,
                               const std::string& cluster_splice) {
  const std::string& mode = listener.splice.value_or(cluster_splice);
  if (mode == "on") return RelayPolicy::Mode::kSplice;
  if (mode == "off") return RelayPolicy::Mode::kCopy;
  return RelayPolicy::Mode::kSpliceAfter;
}

L4Proxy::L4Proxy(metrics::Registry* registry, std::vector<LoopView> loops) : registry_(registry) {
  for (size_t i = 0; i < loops.size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = loops[i].loop;
    state->index = static_cast<int>(i);
    state->snapshot = loops[i].snapshot;
    loops_.push_back(std::move(state));
  }
}

L4Proxy::~L4Proxy() {
  // The gateway's Shutdown has done this already (its loops may be gone
  // by now): only a proxy that was never shut down stops here.
  if (tasks_.load() == 0) return;
  StopAccepting();
  CloseAll();
  WaitIdle(std::chrono::steady_clock::time_point::max());
}

absl::Status L4Proxy::Start(const GatewayConfig& config) {
  for (size_t li = 0; li < config.tcp_listeners.size(); ++li) {
    const TcpListenerConfig& tc = config.tcp_listeners[li];
    auto ls = std::make_unique<ListenerState>();
    ls->name = tc.name;
    metrics::Labels l = {{"listener", tc.name}};
    auto with = [&](const char* k, const char* v) {
      metrics::Labels out = l;
      out.emplace_back(k, v);
      return out;
    };
    ls->accepted = registry_->AddCounter("capstan_gateway_tcp_connections_total",
                                         "TCP connections accepted, by L4 listener.", l);
    registry_->AddGaugeFunc(
        "capstan_gateway_tcp_connections_active", "TCP connections open now, by L4 listener.",
        [raw = ls.get()] { return static_cast<double>(raw->active.load()); }, l);
    ls->refused = registry_->AddCounter(
        "capstan_gateway_tcp_refused_total",
        "TCP connections closed at once: the listener's max_connections were open.", l);
    ls->bytes_in =
        registry_->AddCounter("capstan_gateway_tcp_bytes_total",
                              "Bytes forwarded, by L4 listener and direction (in: client to "
                              "upstream; out: upstream to client).",
                              with("direction", "in"));
    ls->bytes_out = registry_->AddCounter("capstan_gateway_tcp_bytes_total",
                                          "Bytes forwarded, by L4 listener and direction (in: "
                                          "client to upstream; out: upstream to client).",
                                          with("direction", "out"));
    ls->connect_failures = registry_->AddCounter(
        "capstan_gateway_tcp_connect_failures_total",
        "Connections to an upstream endpoint that failed, by L4 listener.", l);
    ls->no_endpoint =
        registry_->AddCounter("capstan_gateway_tcp_closed_total",
                              "TCP connections the gateway closed, by L4 listener and reason.",
                              with("reason", "no_upstream"));
    ls->idle_closed =
        registry_->AddCounter("capstan_gateway_tcp_closed_total",
                              "TCP connections the gateway closed, by L4 listener and reason.",
                              with("reason", "idle_timeout"));
    ls->endpoint_gone =
        registry_->AddCounter("capstan_gateway_tcp_closed_total",
                              "TCP connections the gateway closed, by L4 listener and reason.",
                              with("reason", "endpoint_removed"));
    ls->cluster_full =
        registry_->AddCounter("capstan_gateway_tcp_closed_total",
                              "TCP connections the gateway closed, by L4 listener and reason.",
                              with("reason", "cluster_max_connections"));
    ls->spliced = registry_->AddCounter(
        "capstan_gateway_tcp_spliced_total",
        "TCP connections whose bytes moved with splice(2), counted when they end.", l);
    ls->splice_fallbacks = registry_->AddCounter(
        "capstan_gateway_tcp_splice_fallbacks_total",
        "TCP connections that asked for splice and stayed on the copy path.", l);
    listeners_.push_back(std::move(ls));

    auto endpoint = mesh::ParseEndpoint(tc.address, /*allow_any_port=*/true);
    if (!endpoint.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tcp listener ", tc.name, ": ", std::string(endpoint.status().message())));
    }
    int port = endpoint->port;
    for (auto& state : loops_) {
      LoopState* raw = state.get();
      absl::Status st;
      net::RunOn(raw->loop, [&] {
        auto listener = net::Listener::Bind(raw->loop, endpoint->host, port, /*reuse_port=*/true);
        if (!listener.ok()) {
          st = listener.status();
          return;
        }
        port = (*listener)->port();
        // Accepted sockets start as the relay wants them: no receive to
        // cancel and re-arm for the exact input limit.
        (*listener)->set_accepted_setup(RelaySocketSetup(tc.buffer_bytes));
        raw->listeners.push_back(std::move(listener).value());
        tasks_.fetch_add(1);
        raw->loop->StartOwned(AcceptLoop(raw, li, raw->listeners.back().get()));
      });
      if (!st.ok()) {
        return absl::UnavailableError(
            absl::StrCat("tcp listener ", tc.name, ": ", std::string(st.message())));
      }
    }
    ports_.push_back(port);
    CAPSTAN_LOG(info, "gateway tcp listening", "listener", tc.name, "address",
                mesh::FormatHostPort(endpoint->host, port), "cluster", tc.cluster);
  }
  return absl::OkStatus();
}

net::Task<void> L4Proxy::AcceptLoop(LoopState* state, size_t listener_index,
                                    net::Listener* listener) {
  ListenerState& ls = *listeners_[listener_index];
  while (true) {
    auto accepted = co_await listener->Accept();
    if (!accepted.ok()) break;  // the listener closed
    std::shared_ptr<const Snapshot> snapshot = *state->snapshot;
    uint32_t max =
        snapshot != nullptr ? snapshot->config.tcp_listeners[listener_index].max_connections : 0;
    if (ls.active.load(std::memory_order_relaxed) >= static_cast<int64_t>(max)) {
      ls.refused->Inc();
      (*accepted)->Close();
      continue;
    }
    ls.active.fetch_add(1, std::memory_order_relaxed);
    ls.accepted->Inc();
    tasks_.fetch_add(1);
    state->loop->StartOwned(Serve(state, listener_index, std::move(accepted).value()));
  }
  TaskEnded();
}

net::Task<void> L4Proxy::Serve(LoopState* state, size_t listener_index,
                               std::shared_ptr<net::Socket> client) {
  ListenerState& ls = *listeners_[listener_index];
  net::EventLoop* loop = state->loop;
  std::shared_ptr<const Snapshot> snapshot = *state->snapshot;
  const TcpListenerConfig& tc_now = snapshot->config.tcp_listeners[listener_index];
  Connection conn;
  conn.pair.client = client;
  conn.listener = &ls;
  conn.cluster = tc_now.cluster;
  conn.pair.last_activity = loop->now();
  LinkFront(&state->connections, &conn);
  // The listener set them up at Start; a reload may have changed `buffer`
  // (no system call either way: the limit was exact already).
  client->set_half_close(true);
  client->set_input_limit(tc_now.buffer_bytes, /*exact=*/true);

  std::shared_ptr<Cluster> cluster;
  if (auto it = snapshot->clusters.find(tc_now.cluster); it != snapshot->clusters.end()) {
    cluster = it->second;
  }
  ClusterStats* cstats = nullptr;
  if (auto it = snapshot->cluster_stats.find(tc_now.cluster); it != snapshot->cluster_stats.end()) {
    cstats = it->second;
  }
  RelayPolicy policy;
  policy.mode = RelayModeFor(tc_now, cluster != nullptr ? cluster->config().splice : "auto");
  policy.splice_after = tc_now.splice_after_bytes;
  policy.buffer_bytes = tc_now.buffer_bytes;
  policy.splice_pipe_bytes = tc_now.splice_pipe_bytes;
  const std::string proxy_protocol = tc_now.proxy_protocol;
  const int connect_attempts = tc_now.connect_attempts;
  const Duration idle_timeout = tc_now.idle_timeout;
  const std::optional<Duration> connect_timeout = tc_now.connect_timeout;
  snapshot.reset();  // a long connection does not keep an old configuration alive
  // A slot in the cluster's max_connections, held for the connection's life.
  std::shared_ptr<std::atomic<int64_t>> cluster_slot;
  if (cluster != nullptr) {
    cluster_slot = ClusterConnections(conn.cluster);
    if (cluster_slot->fetch_add(1, std::memory_order_relaxed) >=
        static_cast<int64_t>(cluster->config().limits.max_connections)) {
      cluster_slot->fetch_sub(1, std::memory_order_relaxed);
      cluster_slot.reset();
      cluster.reset();
      ls.cluster_full->Inc();
      client->Close();
    }
  }
  // The client's address: Maglev's key and the PROXY header's source. The
  // listener's address only for the PROXY header (one system call each,
  // not paid when nothing needs them).
  sockaddr_storage local{}, peer{};
  bool addressed = true;
  const bool hashes = cluster != nullptr && cluster->config().balancer == "maglev";
  if (hashes || proxy_protocol != "none") addressed = PeerAddress(client->fd(), &peer);
  if (addressed && proxy_protocol != "none") addressed = LocalAddress(client->fd(), &local);
  if (cluster != nullptr && addressed) {
    ClusterLoop& cl = cluster->on(state->index);
    uint64_t hash = hashes ? mesh::HashKey(AddressText(peer)) : 0;
    Duration timeout = connect_timeout.value_or(cluster->config().connect_timeout);
    std::vector<std::shared_ptr<PooledEndpoint>> tried;
    for (int attempt = 1; attempt <= connect_attempts && !client->closed(); ++attempt) {
      std::shared_ptr<PooledEndpoint> endpoint = cl.Pick(hash, tried);
      if (endpoint == nullptr) break;
      tried.push_back(endpoint);
      mesh::PoolClock::time_point started = cl.pool().BeginAttempt(*endpoint);
      auto connect = net::Socket::Connect(loop, endpoint->endpoint.host, endpoint->endpoint.port,
                                          timeout, RelaySocketSetup(policy.buffer_bytes));
      auto socket = co_await connect;
      if (socket.ok()) {
        cl.pool().EndAttempt(*endpoint, mesh::AttemptVerdict::kSuccess, started);
        conn.pair.upstream = std::move(socket).value();
        conn.endpoint = endpoint->endpoint;
        break;
      }
      cl.pool().EndAttempt(*endpoint, mesh::AttemptVerdict::kEndpointFailure, started);
      ls.connect_failures->Inc();
      if (cstats != nullptr) cstats->connect_failures->Inc();
      CAPSTAN_LOG(debug, "gateway tcp: connect failed", "listener", ls.name, "endpoint",
                  endpoint->endpoint.id, "error", std::string(socket.status().message()));
    }
  }
  // Nor an old cluster (its source, its health checks): the endpoint is
  // matched by id, host and port from now on.
  cluster.reset();
  if (conn.pair.upstream == nullptr) {
    if (!client->closed()) ls.no_endpoint->Inc();
  } else if (!client->closed()) {
    net::Socket* up = conn.pair.upstream.get();
    if (proxy_protocol == "v1") {
      up->Write(ProxyProtocolV1(peer, local));
    } else if (proxy_protocol == "v2") {
      up->Write(ProxyProtocolV2(peer, local));
    }
    conn.pair.last_activity = loop->now();
    net::Timer idle([&] {
      auto quiet_until = conn.pair.last_activity + idle_timeout;
      if (loop->now() >= quiet_until) {
        ls.idle_closed->Inc();
        conn.Close();
        return;
      }
      idle.Arm(loop, quiet_until);
    });
    if (idle_timeout.count() > 0) idle.ArmAfter(loop, idle_timeout);
    RelayCounters counters{.bytes_in = ls.bytes_in,
                           .bytes_out = ls.bytes_out,
                           .spliced = ls.spliced,
                           .splice_fallbacks = ls.splice_fallbacks};
    auto relay = RelayPair(loop, &state->pipes, policy, counters, &conn.pair);
    co_await relay;
    idle.Cancel();
  }
  Unlink(&state->connections, &conn);
  conn.Close();
  if (cluster_slot != nullptr) cluster_slot->fetch_sub(1, std::memory_order_relaxed);
  ls.active.fetch_sub(1, std::memory_order_relaxed);
  TaskEnded();
}

std::shared_ptr<std::atomic<int64_t>> L4Proxy::ClusterConnections(const std::string& cluster) {
  std::lock_guard<std::mutex> lock(cluster_connections_mu_);
  std::shared_ptr<std::atomic<int64_t>>& count = cluster_connections_[cluster];
  if (count == nullptr) count = std::make_shared<std::atomic<int64_t>>(0);
  return count;
}

void L4Proxy::OnSnapshot(int i) {
  LoopState& state = *loops_[static_cast<size_t>(i)];
  const std::shared_ptr<const Snapshot>& snapshot = *state.snapshot;
  if (snapshot == nullptr) return;
  for (const TcpListenerConfig& tc : snapshot->config.tcp_listeners) {
    auto it = snapshot->clusters.find(tc.cluster);
    if (it == snapshot->clusters.end()) continue;
    it->second->on(i).set_on_update([this, i] { Sweep(i); });
  }
  Sweep(i);
}

void L4Proxy::Sweep(int i) {
  LoopState& state = *loops_[static_cast<size_t>(i)];
  const std::shared_ptr<const Snapshot>& snapshot = *state.snapshot;
  if (snapshot == nullptr) return;
  for (Connection* c = state.connections; c != nullptr; c = c->next) {
    if (c->pair.upstream == nullptr) continue;  // still connecting: it picks from the new set
    bool stays = false;
    if (auto it = snapshot->clusters.find(c->cluster); it != snapshot->clusters.end()) {
      ClusterLoop& cl = it->second->on(i);
      // A cluster that has not heard from its source yet (a new discovery
      // cluster after a reload) says nothing about the endpoint: kept.
      if (!cl.pool().have_endpoints()) continue;
      const auto& members = cl.pool().members();
      auto m = members.find(c->endpoint.id);
      stays = m != members.end() && m->second->endpoint.host == c->endpoint.host &&
              m->second->endpoint.port == c->endpoint.port;
    }
    if (stays) continue;
    // Closing only schedules the coroutines' wake-up: the list stays as it
    // is during this walk.
    CAPSTAN_LOG(debug, "gateway tcp: endpoint left, closing", "cluster", c->cluster, "endpoint",
                c->endpoint.id);
    c->listener->endpoint_gone->Inc();
    c->Close();
  }
}

void L4Proxy::StopAccepting() {
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      for (auto& listener : raw->listeners) listener->Close();
    });
  }
}

void L4Proxy::CloseAll() {
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      for (Connection* c = raw->connections; c != nullptr; c = c->next) c->Close();
    });
  }
}

bool L4Proxy::WaitIdle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(idle_mu_);
  if (deadline == std::chrono::steady_clock::time_point::max()) {
    idle_.wait(lock, [this] { return tasks_.load() == 0; });
    return true;
  }
  return idle_.wait_until(lock, deadline, [this] { return tasks_.load() == 0; });
}

void L4Proxy::TaskEnded() {
  if (tasks_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(idle_mu_);
    idle_.notify_all();
  }
}

int64_t L4Proxy::active_connections() const {
  int64_t n = 0;
  for (const auto& ls : listeners_) n += ls->active.load(std::memory_order_relaxed);
  return n;
}

}  // namespace capstan::gateway
