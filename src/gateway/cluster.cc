#include "gateway/cluster.h"

#include <limits>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "net/block_on.h"
#include "net/http1.h"
#include "net/wait_group.h"

namespace capstan::gateway {

// ---- ClusterLoop

EndpointConnections::~EndpointConnections() {
  for (UpstreamConnection& c : idle) {
    c.socket->Close();
    --*open_connections;
  }
  if (http2 != nullptr) http2->GoAway();  // ends once its streams end
}

namespace {

mesh::EndpointPoolOptions PoolOptions(const ClusterConfig& config) {
  mesh::EndpointPoolOptions o;
  o.balancer = config.balancer;
  o.outlier.enabled = config.outlier_detection;
  if (!config.circuit_breaker) {
    // Never opens: no run of failures is long enough, and no window holds
    // enough calls for the error rate to count.
    o.breaker.consecutive_failures = std::numeric_limits<int>::max();
    o.breaker.min_calls_for_rate = std::numeric_limits<int>::max();
  }
  // Retries are decided per route (RetryPolicy); the pool bounds them by
  // its budget and back-off.
  o.max_attempts = 10;
  o.initial_retry_backoff = std::chrono::milliseconds(0);
  o.wait_for_endpoints = std::chrono::milliseconds(0);
  return o;
}

net::Task<void> DriveSession(std::shared_ptr<net::Http2Session> session) {
  co_await session->Run();
}

}  // namespace

ClusterLoop::ClusterLoop(net::EventLoop* loop, const ClusterConfig* config,
                         std::shared_ptr<const net::TlsContext> tls)
    : loop_(loop), config_(config), tls_(std::move(tls)) {
  auto counter = open_connections_;
  // The balancer name was checked when the cluster was created.
  pool_ = EndpointPool::Create(loop, config_->name, PoolOptions(*config_),
                               [counter](const mesh::Endpoint&) {
                                 auto c = std::make_shared<EndpointConnections>();
                                 c->open_connections = counter;
                                 return c;
                               })
              .value();
}

ClusterLoop::~ClusterLoop() {
  // Requests still waiting for a slot give up (they hold nothing of ours
  // once resumed).
  for (PendingRequest* waiting : pending_) {
    waiting->give_up->Cancel();
    waiting->timed_out = true;
    loop_->Schedule(waiting->handle);
  }
  pending_.clear();
  pool_->Update({});
}

void ClusterLoop::Update(std::vector<mesh::Endpoint> endpoints) {
  pool_->Update(std::move(endpoints));
  if (on_update_) on_update_();
}

std::vector<std::shared_ptr<PooledEndpoint>> ClusterLoop::endpoints() const {
  std::vector<std::shared_ptr<PooledEndpoint>> out;
  for (const auto& [id, m] : pool_->members()) out.push_back(m);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->endpoint.id < b->endpoint.id; });
  return out;
}

void ClusterLoop::SetHealthy(const std::string& endpoint_id, bool healthy) {
  if (healthy) {
    unhealthy_.erase(endpoint_id);
    return;
  }
  unhealthy_.insert(endpoint_id);
  auto it = pool_->members().find(endpoint_id);
  if (it == pool_->members().end()) return;
  EndpointConnections& c = *it->second->connection;
  for (UpstreamConnection& conn : c.idle) {
    conn.socket->Close();
    --*open_connections_;
  }
  c.idle.clear();
}

std::shared_ptr<PooledEndpoint> ClusterLoop::Pick(
    uint64_t hash, const std::vector<std::shared_ptr<PooledEndpoint>>& tried) {
  if (unhealthy_.empty()) return pool_->Pick(hash, tried);
  std::vector<std::shared_ptr<PooledEndpoint>> avoid = tried;
  for (const auto& [id, m] : pool_->members()) {
    if (unhealthy_.contains(id)) avoid.push_back(m);
  }
  return pool_->Pick(hash, avoid);
}

net::Task<absl::StatusOr<std::shared_ptr<net::Socket>>> ClusterLoop::Connect(
    const mesh::Endpoint& e) {
  auto socket = co_await net::Socket::Connect(loop_, e.host, e.port, config_->connect_timeout);
  if (!socket.ok()) co_return socket;
  // The upstream is read no further ahead than this while the client side
  // is slow: what a stuck client can make the gateway hold per request.
  // Exact from the start (no receive armed yet); each request then sets its
  // client protocol's read-ahead (kUpstreamReadAheadFor*).
  (*socket)->set_input_limit(kUpstreamReadAheadForHttp2, /*exact=*/true);
  if (tls_ == nullptr) co_return socket;
  // The handshake runs as bytes flow; a failed one surfaces as the
  // request's read error (502), naming the certificate problem in the log.
  const std::string& name = config_->tls_server_name.empty() ? e.host : config_->tls_server_name;
  absl::Status st = (*socket)->StartTls(tls_, net::TlsRole::kClient, name);
  if (!st.ok()) {
    (*socket)->Close();
    co_return st;
  }
  co_return socket;
}

net::Task<absl::StatusOr<std::shared_ptr<net::Http2Session>>> ClusterLoop::AcquireHttp2(
    const std::shared_ptr<PooledEndpoint>& endpoint) {
  EndpointConnections& c = *endpoint->connection;
  if (c.http2 != nullptr && c.http2->CanOpenStream()) co_return c.http2;
  auto socket = co_await Connect(endpoint->endpoint);
  if (!socket.ok()) co_return socket.status();
  net::Http2Options options;
  options.max_concurrent_streams = 100;  // what it may push to us: nothing
  options.manual_flow_control = true;    // responses flow at the client's pace
  options.stream_window_bytes = 1 << 20;
  options.connection_window_bytes = 16 << 20;
  auto session = std::make_shared<net::Http2Session>(net::Http2Session::Role::kClient,
                                                     std::move(socket).value(), options);
  if (!session->Start()) {
    session->Close();
    co_return absl::UnavailableError("http2: cannot start a client session");
  }
  loop_->StartOwned(DriveSession(session));
  // A session that can take no more streams goes away once they end.
  if (c.http2 != nullptr && c.http2 != session && c.http2->open_streams() == 0) c.http2->Close();
  c.http2 = session;
  co_return session;
}

net::Task<absl::StatusOr<UpstreamConnection>> ClusterLoop::Acquire(
    std::shared_ptr<PooledEndpoint> endpoint) {
  std::vector<UpstreamConnection>& idle = endpoint->connection->idle;
  while (true) {
    auto now = loop_->now();
    while (!idle.empty()) {
      UpstreamConnection conn = std::move(idle.back());
      idle.pop_back();
      bool expired =
          config_->idle_timeout.count() > 0 && now - conn.idle_since > config_->idle_timeout;
      // Closed by the upstream while idle, or holding bytes nobody asked
      // for: not reusable.
      if (conn.socket->closed() || !conn.socket->input().empty() || expired) {
        conn.socket->Close();
        --*open_connections_;
        continue;
      }
      conn.endpoint = std::move(endpoint);
      co_return conn;
    }
    if (*open_connections_ < static_cast<int>(config_->limits.max_connections)) break;
    if (CloseAnIdleConnection()) continue;
    if (pending_.size() >= config_->limits.max_pending_requests) {
      co_return absl::ResourceExhaustedError("max_pending_requests");
    }
    PendingRequest waiting;
    net::Timer give_up([this, &waiting] {
      auto it = std::find(pending_.begin(), pending_.end(), &waiting);
      if (it == pending_.end()) return;  // already woken
      pending_.erase(it);
      waiting.timed_out = true;
      loop_->Schedule(waiting.handle);
    });
    give_up.ArmAfter(loop_, config_->connect_timeout);
    waiting.give_up = &give_up;
    co_await PendingAwaiter{this, &waiting};
    give_up.Cancel();
    if (waiting.timed_out) co_return absl::ResourceExhaustedError("max_connections");
  }
  ++*open_connections_;
  auto socket = co_await Connect(endpoint->endpoint);
  if (!socket.ok()) {
    --*open_connections_;
    WakeAPendingRequest();
    co_return socket.status();
  }
  UpstreamConnection conn;
  conn.socket = std::move(socket).value();
  conn.endpoint = std::move(endpoint);
  conn.created = loop_->now();
  co_return conn;
}

void ClusterLoop::Release(UpstreamConnection conn, bool reusable) {
  auto now = loop_->now();
  bool too_old = config_->max_connection_lifetime.count() > 0 &&
                 now - conn.created > config_->max_connection_lifetime;
  // An endpoint that left the set (draining) keeps no idle connections.
  auto it = pool_->members().find(conn.endpoint->endpoint.id);
  bool current = it != pool_->members().end() && it->second == conn.endpoint;
  std::vector<UpstreamConnection>& idle = conn.endpoint->connection->idle;
  if (!reusable || too_old || !current || conn.socket->closed() ||
      unhealthy_.contains(conn.endpoint->endpoint.id) ||
      idle.size() >= config_->max_idle_connections) {
    conn.socket->Close();
    --*open_connections_;
    WakeAPendingRequest();
    return;
  }
  conn.idle_since = now;
  ++conn.requests;
  // An idle connection does not hold its endpoint: the endpoint holds its
  // idle connections, and the reverse would be a cycle that keeps an
  // endpoint that left the set (and its sockets) alive forever.
  conn.endpoint.reset();
  idle.push_back(std::move(conn));
  WakeAPendingRequest();
}

bool ClusterLoop::CloseAnIdleConnection() {
  for (const auto& [id, member] : pool_->members()) {
    std::vector<UpstreamConnection>& idle = member->connection->idle;
    if (idle.empty()) continue;
    // The oldest: the one most likely to be closed by the upstream anyway.
    idle.front().socket->Close();
    idle.erase(idle.begin());
    --*open_connections_;
    return true;
  }
  return false;
}

void ClusterLoop::WakeAPendingRequest() {
  if (pending_.empty()) return;
  PendingRequest* next = pending_.front();
  pending_.pop_front();
  loop_->Schedule(next->handle);
}

size_t ClusterLoop::idle_connections() const {
  size_t n = 0;
  for (const auto& [id, m] : pool_->members()) n += m->connection->idle.size();
  return n;
}

// ---- Cluster

absl::StatusOr<std::shared_ptr<Cluster>> Cluster::Create(ClusterConfig config,
                                                         net::LoopGroup* group) {
  if (!mesh::NewBalancer(config.balancer).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster '", config.name, "': unknown balancer '", config.balancer,
                     "' (known: ", absl::StrJoin(mesh::BalancerNames(), ", "), ")"));
  }
  std::string target;
  if (config.discovery) {
    target = *config.discovery;
  } else {
    target = absl::StrCat("static:///", absl::StrJoin(config.endpoints, ","));
  }
  auto source = mesh::NewEndpointSource(target);
  if (!source.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster '", config.name, "': ", std::string(source.status().message())));
  }
  std::shared_ptr<const net::TlsContext> tls;
  if (config.tls) {
    net::TlsClientOptions options;
    options.ca_file = config.tls_ca_file;
    options.verify = config.tls_verify;
    options.cert_file = config.tls_cert_file;
    options.key_file = config.tls_key_file;
    options.alpn = {config.protocol == "h2" ? "h2" : "http/1.1"};
    auto context = net::TlsContext::NewClient(options);
    if (!context.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cluster '", config.name, "': ", std::string(context.status().message())));
    }
    tls = *context;
  }
  std::shared_ptr<Cluster> cluster(new Cluster(std::move(config)));
  for (int i = 0; i < group->size(); ++i) {
    cluster->event_loops_.push_back(group->loop(i));
    cluster->loops_.push_back(
        std::make_unique<ClusterLoop>(group->loop(i), &cluster->config_, tls));
  }
  cluster->source_ = std::move(source).value();
  if (cluster->config_.health_check) {
    net::EventLoop* first = group->loop(0);
    std::weak_ptr<Cluster> checker_ref = cluster;
    first->Post([checker_ref, first] { first->StartOwned(CheckHealth(checker_ref, first)); });
  }
  std::weak_ptr<Cluster> weak = cluster;
  std::vector<net::EventLoop*> loops = cluster->event_loops_;
  cluster->source_->Start([weak, loops](std::vector<mesh::Endpoint> set) {
    for (size_t i = 0; i < loops.size(); ++i) {
      loops[i]->Post([weak, i, set] {
        if (std::shared_ptr<Cluster> c = weak.lock()) c->loops_[i]->Update(set);
      });
    }
  });
  return cluster;
}

namespace {

// One probe: GET the health path (true when the status is in range), or
// for `type: tcp` a connection that opens.
net::Task<bool> Probe(net::EventLoop* loop, mesh::Endpoint endpoint, HealthCheckConfig check) {
  auto socket = co_await net::Socket::Connect(loop, endpoint.host, endpoint.port, check.timeout);
  if (!socket.ok()) co_return false;
  std::shared_ptr<net::Socket> s = *socket;
  if (check.type == "tcp") {  // the connection opened: healthy
    s->Close();
    co_return true;
  }
  std::string host =
      check.host.empty() ? mesh::FormatHostPort(endpoint.host, endpoint.port) : check.host;
  s->Write(std::string_view(absl::StrCat("GET ", check.path, " HTTP/1.1\r\nHost: ", host,
                                         "\r\nUser-Agent: capstan-health-check\r\n"
                                         "Connection: close\r\n\r\n")));
  bool timed_out = false;
  net::Timer deadline([&timed_out, raw = s.get()] {
    timed_out = true;
    raw->Close();
  });
  deadline.ArmAfter(loop, check.timeout);
  net::http1::ResponseParser parser;
  bool healthy = false;
  while (true) {
    net::http1::Event ev = parser.Next(&s->input());
    if (ev.type == net::http1::Event::kHead) {
      int status = parser.head().status;
      if (status >= 200) {
        healthy = status >= check.expected_status_min && status <= check.expected_status_max;
        break;
      }
      continue;
    }
    if (ev.type != net::http1::Event::kNeedMore) break;
    absl::Status st = co_await s->ReadMore();
    if (!st.ok()) break;
  }
  s->Close();
  co_return healthy && !timed_out;
}

}  // namespace

net::Task<void> Cluster::CheckHealth(std::weak_ptr<Cluster> weak, net::EventLoop* loop) {
  // Consecutive results per endpoint id: > 0 successes, < 0 failures.
  absl::flat_hash_map<std::string, int> streak;
  absl::flat_hash_map<std::string, bool> state;  // as last posted (absent: healthy)
  while (true) {
    std::vector<mesh::Endpoint> endpoints;
    HealthCheckConfig check;
    {
      std::shared_ptr<Cluster> cluster = weak.lock();
      if (cluster == nullptr) co_return;
      check = *cluster->config_.health_check;
      for (const auto& e : cluster->on(0).endpoints()) endpoints.push_back(e->endpoint);
    }
    std::vector<bool> results(endpoints.size());
    net::WaitGroup probes(loop);
    for (size_t i = 0; i < endpoints.size(); ++i) {
      probes.Add();
      loop->StartOwned([](net::EventLoop* l, mesh::Endpoint e, HealthCheckConfig c,
                          std::vector<bool>* out, size_t i,
                          net::WaitGroup* done) -> net::Task<void> {
        (*out)[i] = co_await Probe(l, std::move(e), std::move(c));
        done->Done();
      }(loop, endpoints[i], check, &results, i, &probes));
    }
    co_await probes.Wait();
    std::shared_ptr<Cluster> cluster = weak.lock();
    if (cluster == nullptr) co_return;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      int& s = streak[endpoints[i].id];
      s = results[i] ? std::max(s, 0) + 1 : std::min(s, 0) - 1;
      bool was_healthy = !state.contains(endpoints[i].id) || state[endpoints[i].id];
      bool now_healthy = was_healthy;
      if (was_healthy && -s >= check.unhealthy_threshold) now_healthy = false;
      if (!was_healthy && s >= check.healthy_threshold) now_healthy = true;
      if (now_healthy == was_healthy) continue;
      state[endpoints[i].id] = now_healthy;
      CAPSTAN_LOG(info, "gateway: endpoint health changed", "cluster", cluster->name(), "endpoint",
                  endpoints[i].id, "healthy", now_healthy);
      for (size_t l = 0; l < cluster->event_loops_.size(); ++l) {
        std::string id = endpoints[i].id;
        cluster->event_loops_[l]->Post([weak, l, id, now_healthy] {
          if (auto c = weak.lock()) c->loops_[l]->SetHealthy(id, now_healthy);
        });
      }
    }
    cluster.reset();
    co_await loop->Sleep(check.interval);
  }
}

Cluster::~Cluster() {
  source_.reset();  // no update runs after this
  for (size_t i = 0; i < loops_.size(); ++i) {
    net::EventLoop* loop = event_loops_[i];
    if (loop->InLoopThread()) {
      loops_[i].reset();
    } else {
      loop->Post([part = std::move(loops_[i])]() mutable { part.reset(); });
    }
  }
}

std::string Cluster::Describe() const {
  return config_.discovery ? *config_.discovery : absl::StrJoin(config_.endpoints, ",");
}

}  // namespace capstan::gateway
