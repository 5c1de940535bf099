#include "gateway/gateway.h"

#include "gateway/intrusive_list.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "gateway/cache/serve.h"
#include "gateway/edge/hooks.h"
#include "gateway/http1_proxy.h"
#include "gateway/http2_proxy.h"
#include "gateway/l4_proxy.h"
#include "mesh/discovery.h"
#include "net/block_on.h"
#include "net/http_router.h"
#include "net/splice_sender.h"
#include "net/wait_group.h"

namespace capstan::gateway {

struct Gateway::LoopState {
  net::EventLoop* loop = nullptr;
  int index = 0;
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<std::unique_ptr<net::Listener>> listeners;
  // Intrusive lists (the nodes live in the connections' frames and in the
  // parked records), for the shutdown.
  ConnectionControl* connections = nullptr;
  ParkedConnection* parked = nullptr;
};

// An idle HTTP/1.1 keep-alive connection in clear text, parked after
// `limits.idle_park_after` of silence: its fd, a wait for its next bytes
// and the rest of its idle time — no Socket, no coroutine frame (about 160
// bytes where those take about 2 KB). Bytes, or the peer's close, bring it
// back as a Socket and a new ServeConnection; the idle timeout or the
// gateway's shutdown close it. Holds one of tasks_ and stays counted in
// downstream_connections meanwhile.
struct Gateway::ParkedConnection final : net::FdWaiter {
  ParkedConnection(Gateway* gateway, LoopState* state, size_t listener_index, int fd)
      : FdWaiter(state->loop, fd, &Gateway::OnParkedReady),
        gateway(gateway),
        state(state),
        listener_index(static_cast<uint32_t>(listener_index)),
        idle_timer([this] { Cancel(); }) {}

  Gateway* gateway;
  LoopState* state;
  uint32_t listener_index;
  net::Timer idle_timer;  // the idle timeout's rest: ends the wait
  ParkedConnection* prev = nullptr;
  ParkedConnection* next = nullptr;
};

void Gateway::Counters::CountStatus(int status) {
  switch (status / 100) {
    case 2:
      s2xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 3:
      s3xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 4:
      s4xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 5:
      s5xx.fetch_add(1, std::memory_order_relaxed);
      break;
    default:
      break;
  }
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Start(GatewayConfig config, net::LoopGroup* group,
                                                        ExperimentRouting* experiments) {
  RETURN_IF_ERROR(ValidateGatewayConfig(config));
  std::unique_ptr<Gateway> gw(new Gateway(group));
  gw->experiments_ = experiments;
  for (int i = 0; i < group->size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = group->loop(i);
    state->index = i;
    gw->loops_.push_back(std::move(state));
  }
  std::vector<L4Proxy::LoopView> views;
  for (auto& state : gw->loops_) views.push_back({state->loop, &state->snapshot});
  gw->l4_ = std::make_unique<L4Proxy>(&gw->metrics_.registry(), std::move(views));
  metrics::Registry& reg = gw->metrics_.registry();
  Gateway* raw_gw = gw.get();
  reg.AddGaugeFunc(
      "capstan_gateway_downstream_connections", "Client connections open now.",
      [raw_gw] { return static_cast<double>(raw_gw->counters_.downstream_connections.load()); });
  reg.AddGaugeFunc(
      "capstan_gateway_parked_connections",
      "Of the client connections open now, those idle long enough to be kept as a bare fd.",
      [raw_gw] { return static_cast<double>(raw_gw->counters_.parked_connections.load()); });
  reg.AddGaugeFunc("capstan_gateway_bad_requests_total",
                   "Requests refused by the codec (framing, limits); a counter.",
                   [raw_gw] { return static_cast<double>(raw_gw->counters_.bad_requests.load()); });
  reg.AddGaugeFunc("capstan_gateway_spliced_bytes_total",
                   "Response bytes sent with vmsplice/splice instead of copied (cached bodies "
                   "of 64 KiB and more to clear-text HTTP/1.1 clients); a counter.",
                   [] { return static_cast<double>(net::SpliceSender::ProcessBytes()); });
  reg.AddGaugeFunc(
      "capstan_gateway_edge_failures_total",
      "Edge function invocations that failed (error, budget, memory, invalid edit); a counter.",
      [raw_gw] { return static_cast<double>(raw_gw->counters_.edge_failures.load()); });
  if (!config.access_log.path.empty()) {
    metrics::Counter* dropped =
        reg.AddCounter("capstan_gateway_access_log_dropped_total",
                       "Access log lines dropped because the writer fell behind.");
    ASSIGN_OR_RETURN(gw->access_log_, AccessLog::Open(config.access_log.path, dropped));
  }
  std::string admin_address = config.admin_address;
  if (config.cache) {
    ASSIGN_OR_RETURN(gw->cache_, cache::HttpCache::Create(*config.cache, &reg));
  }
  bool cache_purge = config.cache && config.cache->purge;
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot,
                   gw->BuildSnapshot(std::move(config), nullptr));
  gw->Publish(snapshot);
  if (!admin_address.empty()) {
    auto where = mesh::ParseEndpoint(admin_address, /*allow_any_port=*/true);
    if (!where.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("admin: ", std::string(where.status().message())));
    }
    gw->admin_ = std::make_unique<net::HttpServer>();
    gw->admin_->Handle("/metrics", [raw_gw] {
      return net::HttpResponse{.content_type = "text/plain; version=0.0.4; charset=utf-8",
                               .body = raw_gw->metrics_.registry().RenderText()};
    });
    gw->admin_->Handle("/health", [] { return net::HttpResponse{.body = "ok\n"}; });
    gw->admin_->Handle("/status", [raw_gw] {
      return net::HttpResponse{.content_type = "application/json", .body = raw_gw->StatusJson()};
    });
    if (cache_purge) {
      std::shared_ptr<cache::HttpCache> http_cache = gw->cache_;
      gw->admin_->HandleAll([http_cache](const net::HttpRequest& r) {
        if (r.path == "/cache/purge") return http_cache->HandlePurge(r);
        return net::JsonError(404, "not_found", "no such path");
      });
    }
    RETURN_IF_ERROR(gw->admin_->Start(where->host, where->port));
    CAPSTAN_LOG(info, "gateway admin endpoint", "address",
                mesh::FormatHostPort(where->host, gw->admin_->port()));
  }
  const GatewayConfig& c = snapshot->config;
  for (size_t li = 0; li < c.listeners.size(); ++li) {
    auto endpoint = mesh::ParseEndpoint(c.listeners[li].address, /*allow_any_port=*/true);
    if (!endpoint.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("listener ", c.listeners[li].name, ": ",
                                                     std::string(endpoint.status().message())));
    }
    int port = endpoint->port;
    for (auto& state : gw->loops_) {
      LoopState* raw = state.get();
      absl::Status st;
      net::RunOn(raw->loop, [&] {
        auto listener = net::Listener::Bind(raw->loop, endpoint->host, port, /*reuse_port=*/true);
        if (!listener.ok()) {
          st = listener.status();
          return;
        }
        port = (*listener)->port();
        raw->listeners.push_back(std::move(listener).value());
        gw->tasks_.fetch_add(1);
        raw->loop->StartOwned(gw->AcceptLoop(raw, li, raw->listeners.back().get()));
      });
      if (!st.ok()) {
        gw->Shutdown(std::chrono::milliseconds(0));
        return st;
      }
    }
    gw->ports_.push_back(port);
    CAPSTAN_LOG(info, "gateway listening", "listener", c.listeners[li].name, "address",
                mesh::FormatHostPort(endpoint->host, port), "tls", c.listeners[li].tls.has_value());
  }
  if (absl::Status st = gw->l4_->Start(c); !st.ok()) {
    gw->Shutdown(std::chrono::milliseconds(0));
    return st;
  }
  return gw;
}

Gateway::Gateway(net::LoopGroup* group) : group_(group) {}

Gateway::~Gateway() { Shutdown(std::chrono::milliseconds(0)); }

const std::vector<int>& Gateway::tcp_ports() const { return l4_->ports(); }

absl::StatusOr<std::shared_ptr<const Snapshot>> Gateway::BuildSnapshot(GatewayConfig config,
                                                                       const Snapshot* previous) {
  auto snapshot = std::make_shared<Snapshot>();
  // TLS contexts are built anew (certificate files read again) with every
  // snapshot: a reload picks up renewed certificates; connections keep the
  // context they started with.
  for (const ListenerConfig& l : config.listeners) {
    std::shared_ptr<const net::TlsContext> tls;
    if (l.tls) {
      net::TlsServerOptions options;
      for (const TlsCertificate& c : l.tls->certificates) {
        options.certificates.push_back({c.cert_file, c.key_file, c.server_names});
      }
      options.alpn = l.tls->alpn;
      options.tls13_only = l.tls->min_version == "TLSv1.3";
      options.session_tickets = l.tls->session_tickets;
      auto context = net::TlsContext::NewServer(options);
      if (!context.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("listener ", l.name, ": ", std::string(context.status().message())));
      }
      tls = *context;
    }
    snapshot->listener_tls.push_back(std::move(tls));
  }
  ASSIGN_OR_RETURN(snapshot->routes, RouteTable::Build(config.virtual_hosts));
  RETURN_IF_ERROR(edge::BuildFunctions(config, previous, snapshot.get()));
  for (const ClusterConfig& cc : config.clusters) {
    // A cluster whose configuration is unchanged keeps its pools and
    // endpoint state.
    if (previous != nullptr) {
      auto it = previous->clusters.find(cc.name);
      if (it != previous->clusters.end()) {
        if (ClusterConfigsEqual(it->second->config(), cc)) {
          snapshot->clusters.emplace(cc.name, it->second);
          continue;
        }
      }
    }
    ASSIGN_OR_RETURN(std::shared_ptr<Cluster> cluster, Cluster::Create(cc, group_));
    snapshot->clusters.emplace(cc.name, std::move(cluster));
  }
  snapshot->route_stats.resize(snapshot->routes->route_count());
  snapshot->routes->ForEachRoute(
      [&](const Route& r) { snapshot->route_stats[r.index()] = metrics_.ForRoute(r.label()); });
  for (const auto& [name, cluster] : snapshot->clusters) {
    snapshot->cluster_stats[name] = metrics_.ForCluster(name);
  }
  snapshot->cache = cache_;
  snapshot->config = std::move(config);
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

void Gateway::Publish(std::shared_ptr<const Snapshot> snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = snapshot;
  }
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    // Synchronously, so that a Reload has reached every loop when it returns.
    net::RunOn(raw->loop, [this, raw, snapshot] {
      raw->snapshot = snapshot;
      // Connections whose endpoint left are closed (connection tracking).
      if (l4_ != nullptr) l4_->OnSnapshot(raw->index);
    });
  }
}

absl::Status Gateway::ReloadCertificates() { return Reload(config()); }

GatewayConfig Gateway::config() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_->config;
}

absl::Status Gateway::Reload(GatewayConfig config) {
  std::lock_guard<std::mutex> reloading(reload_mu_);
  RETURN_IF_ERROR(ValidateGatewayConfig(config));
  std::shared_ptr<const Snapshot> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous = current_;
  }
  if (config.listeners.size() != previous->config.listeners.size()) {
    return absl::FailedPreconditionError("listeners cannot change without a restart");
  }
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    if (config.listeners[i].address != previous->config.listeners[i].address) {
      return absl::FailedPreconditionError(absl::StrCat(
          "listener ", config.listeners[i].name, ": the address cannot change without a restart"));
    }
  }
  if (config.tcp_listeners.size() != previous->config.tcp_listeners.size()) {
    return absl::FailedPreconditionError("tcp listeners cannot change without a restart");
  }
  for (size_t i = 0; i < config.tcp_listeners.size(); ++i) {
    if (config.tcp_listeners[i].address != previous->config.tcp_listeners[i].address) {
      return absl::FailedPreconditionError(
          absl::StrCat("tcp listener ", config.tcp_listeners[i].name,
                       ": the address cannot change without a restart"));
    }
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot,
                   BuildSnapshot(std::move(config), previous.get()));
  Publish(std::move(snapshot));
  return absl::OkStatus();
}

net::Task<void> Gateway::AcceptLoop(LoopState* state, size_t listener_index,
                                    net::Listener* listener) {
  while (true) {
    auto accepted = co_await listener->Accept();
    if (!accepted.ok()) break;  // the listener closed
    tasks_.fetch_add(1);
    state->loop->StartOwned(ServeConnection(state, listener_index, std::move(accepted).value()));
  }
  TaskEnded();
}

namespace {

std::string PeerAddress(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  char text[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, text, sizeof(text));
  }
  return text;
}

}  // namespace

net::Task<void> Gateway::ServeConnection(LoopState* state, size_t listener_index,
                                         std::shared_ptr<net::Socket> socket, bool resumed) {
  if (!resumed) counters_.downstream_connections.fetch_add(1, std::memory_order_relaxed);
  ConnectionControl control;
  control.socket = socket.get();
  LinkFront(&state->connections, &control);
  // The loop's snapshot holds the listener's current TLS context (a parked
  // connection is clear text: OnParkedReady checked).
  std::shared_ptr<const net::TlsContext> tls =
      resumed ? nullptr : state->snapshot->listener_tls[listener_index];
  // An HTTP/1.1 client may send its request and shut its write side: it
  // still gets the answer. (HTTP/2 has no half-close at this level; its
  // session ends on the FIN once the bytes before it are read.)
  socket->set_half_close(true);
  bool ok = true;
  int parked_fd = -1;
  Duration idle_left{0};
  if (tls != nullptr) {
    absl::Status st = socket->StartTls(tls, net::TlsRole::kServer);
    if (!st.ok()) {
      CAPSTAN_LOG(warn, "gateway: TLS did not start", "error", std::string(st.message()));
      ok = false;
    }
  }
  if (ok) {
    DownstreamContext context{.loop = state->loop,
                              .loop_index = state->index,
                              .snapshot = &state->snapshot,
                              .counters = &counters_,
                              .draining = &draining_,
                              .client_address = PeerAddress(socket->fd()),
                              .tls = tls != nullptr,
                              .listener_index = listener_index,
                              .control = &control,
                              .loop_state = state,
                              .access_log = access_log_.get(),
                              .experiments = experiments_};
    // The protocol: ALPN under TLS; in clear text the HTTP/2 connection
    // preface (prior knowledge) or else HTTP/1.1.
    bool http2 = false;
    // Read before any await: `lc` belongs to a snapshot a reload may free.
    const ListenerConfig& lc = state->snapshot->config.listeners[listener_index];
    idle_left = lc.limits.idle_timeout - lc.limits.idle_park_after;
    // Until the protocol is known (the TLS handshake, the preface) the
    // header timeout holds: silence or a dribble is closed (slowloris).
    net::Timer sniff_timer([raw = socket.get()] { raw->Close(); });
    bool h2c = std::find(lc.protocols.begin(), lc.protocols.end(), "h2c") != lc.protocols.end();
    if (!resumed && (tls != nullptr || h2c)) {
      sniff_timer.ArmAfter(state->loop, lc.limits.request_header_timeout);
      static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      while (true) {
        if (tls != nullptr && socket->tls()->handshake_done()) {
          http2 = socket->tls()->alpn() == "h2";
          break;
        }
        if (tls == nullptr) {
          std::string scratch;
          size_t n = std::min(socket->input().size(), kPreface.size());
          std::string_view head = socket->input().Peek(n, &scratch);
          if (head != kPreface.substr(0, n)) break;  // not HTTP/2
          if (n == kPreface.size()) {
            http2 = true;
            break;
          }
        }
        absl::Status st = co_await socket->ReadMore();
        if (!st.ok()) break;
      }
    }
    sniff_timer.Cancel();
    if (socket->closed()) {
      // Gone before a request (or a failed handshake).
    } else if (http2) {
      co_await ServeHttp2(context, socket);
    } else {
      std::optional<H2cUpgrade> upgrade;
      co_await ServeHttp1(context, socket, &upgrade, &parked_fd);
      // Switched by an h2c upgrade: the same connection goes on as HTTP/2.
      if (upgrade.has_value() && !socket->closed()) {
        co_await ServeHttp2(context, socket, &*upgrade);
      }
    }
  }
  Unlink(&state->connections, &control);
  socket->Close();  // (released when parked: nothing to close)
  if (parked_fd >= 0) {
    Park(state, listener_index, parked_fd, idle_left);  // the task goes on there
    co_return;
  }
  counters_.downstream_connections.fetch_sub(1, std::memory_order_relaxed);
  TaskEnded();
}

void Gateway::Park(LoopState* state, size_t listener_index, int fd, Duration idle_left) {
  auto* parked = new ParkedConnection(this, state, listener_index, fd);
  LinkFront(&state->parked, parked);
  counters_.parked_connections.fetch_add(1, std::memory_order_relaxed);
  parked->idle_timer.ArmAfter(state->loop, std::max(idle_left, Duration(0)));
  parked->Start();
  // Shutting down already: its step 1 may have passed this loop.
  if (draining_.load()) parked->Cancel();
}

void Gateway::OnParkedReady(net::FdWaiter* waiter, int result) {
  auto* parked = static_cast<ParkedConnection*>(waiter);
  Gateway* gw = parked->gateway;
  LoopState* state = parked->state;
  size_t listener_index = parked->listener_index;
  int fd = parked->fd();
  Unlink(&state->parked, parked);
  delete parked;
  gw->counters_.parked_connections.fetch_sub(1, std::memory_order_relaxed);
  // Bytes or the peer's close (result > 0): served (or ended) as a Socket
  // again — unless the gateway drains or the listener turned to TLS.
  bool resume = result > 0 && !gw->draining_.load() && state->snapshot != nullptr &&
                state->snapshot->listener_tls[listener_index] == nullptr;
  if (!resume) {
    ::close(fd);
    gw->counters_.downstream_connections.fetch_sub(1, std::memory_order_relaxed);
    gw->TaskEnded();
    return;
  }
  state->loop->StartOwned(gw->ServeConnection(state, listener_index,
                                              net::Socket::Adopt(state->loop, fd),
                                              /*resumed=*/true));
}

void Gateway::TaskEnded() {
  if (tasks_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

void Gateway::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  draining_ = true;
  if (admin_ != nullptr) admin_->Stop();
  if (l4_ != nullptr) l4_->StopAccepting();
  // 1. No new connections; idle keep-alive connections close, busy ones
  // answer their request with Connection: close.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      for (auto& listener : raw->listeners) listener->Close();
      // (Close and drain only schedule: the lists stay as they are meanwhile.)
      for (ConnectionControl* c = raw->connections; c != nullptr; c = c->next) {
        if (c->drain) {
          c->drain();
        } else if (c->idle) {
          c->socket->Close();
        }
      }
      for (ParkedConnection* p = raw->parked; p != nullptr; p = p->next) p->Cancel();
    });
  }
  // 2. Requests in flight get the grace period; so do TCP connections.
  auto deadline = std::chrono::steady_clock::now() + grace;
  {
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait_until(lock, deadline, [this] { return tasks_.load() == 0; });
  }
  if (l4_ != nullptr) {
    l4_->WaitIdle(deadline);
    l4_->CloseAll();
  }
  // 3. Whatever is left is closed; its coroutines end.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      for (ConnectionControl* c = raw->connections; c != nullptr; c = c->next) c->socket->Close();
      for (ParkedConnection* p = raw->parked; p != nullptr; p = p->next) p->Cancel();
    });
  }
  {
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait(lock, [this] { return tasks_.load() == 0; });
  }
  if (l4_ != nullptr) l4_->WaitIdle(std::chrono::steady_clock::time_point::max());
  // 4. Clusters (and their pools) go on their loops.
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_.reset();
  }
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] { raw->snapshot.reset(); });
  }
  // A cluster destroyed on one loop posts its other loops' parts (their
  // pools, their sockets) to them: one more pass lets those run before the
  // loops may stop.
  for (auto& state : loops_) net::RunOn(state->loop, [] {});
  access_log_.reset();  // what is buffered is written
}

std::string Gateway::StatusJson() {
  std::shared_ptr<const Snapshot> snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot = current_;
  }
  if (snapshot == nullptr) return "{}\n";
  std::string out = "{\"routes\": [";
  bool first = true;
  snapshot->routes->ForEachRoute([&](const Route& r) {
    const RouteConfig& rc = r.config();
    std::string action;
    if (rc.cluster) {
      action = absl::StrCat("\"cluster\": ", net::JsonQuote(*rc.cluster));
    } else if (!rc.split.empty()) {
      action = "\"split\": [";
      for (size_t i = 0; i < rc.split.size(); ++i) {
        absl::StrAppend(&action, i ? ", " : "",
                        "{\"cluster\": ", net::JsonQuote(rc.split[i].cluster),
                        ", \"weight\": ", rc.split[i].weight, "}");
      }
      action += "]";
    } else if (rc.experiment) {
      const ExperimentRoute& e = *rc.experiment;
      action =
          absl::StrCat("\"experiment\": {\"id\": ", net::JsonQuote(e.experiment),
                       ", \"default\": ", net::JsonQuote(e.default_cluster), ", \"variants\": {");
      for (size_t i = 0; i < e.variants.size(); ++i) {
        absl::StrAppend(&action, i ? ", " : "", net::JsonQuote(e.variants[i].first), ": ",
                        net::JsonQuote(e.variants[i].second));
      }
      action += "}}";
    } else if (rc.redirect) {
      action = "\"redirect\": true";
    } else {
      action = "\"direct_response\": true";
    }
    if (rc.edge_function) {
      absl::StrAppend(&action, ", \"edge_function\": ", net::JsonQuote(*rc.edge_function));
    }
    absl::StrAppend(&out, first ? "" : ", ", "{\"route\": ", net::JsonQuote(r.label()), ", ",
                    action, "}");
    first = false;
  });
  out += "], \"clusters\": [";
  first = true;
  for (const auto& [name, cluster] : snapshot->clusters) {
    std::string endpoints;
    // The first loop's view (each loop has its own breakers and pools).
    net::RunOn(loops_.front()->loop, [&, c = cluster.get()] {
      ClusterLoop& cl = c->on(0);
      bool first_endpoint = true;
      for (const auto& e : cl.endpoints()) {
        bool ejected = cl.pool().ejected(*e);
        absl::StrAppend(&endpoints, first_endpoint ? "" : ", ",
                        "{\"endpoint\": ", net::JsonQuote(e->endpoint.id),
                        ", \"weight\": ", e->endpoint.weight, ", \"breaker\": \"",
                        mesh::CircuitBreaker::StateName(e->breaker.state()),
                        "\", \"healthy\": ", cl.healthy(e->endpoint.id) ? "true" : "false",
                        ", \"ejected\": ", ejected ? "true" : "false",
                        ", \"ewma_ms\": ", e->ewma_latency_ns / 1e6, "}");
        first_endpoint = false;
      }
      absl::StrAppend(&endpoints, "], \"open_connections\": ", cl.open_connections(),
                      ", \"idle_connections\": ", cl.idle_connections(),
                      ", \"active_requests\": ", cl.active_requests);
    });
    absl::StrAppend(&out, first ? "" : ", ", "{\"cluster\": ", net::JsonQuote(name),
                    ", \"source\": ", net::JsonQuote(cluster->Describe()), ", \"protocol\": \"",
                    cluster->config().protocol, "\", \"balancer\": \"", cluster->config().balancer,
                    "\", \"endpoints\": [", endpoints, "}");
    first = false;
  }
  // Edge functions: the version live (hex) and, from the store, its revision.
  out += "], \"edge_functions\": [";
  first = true;
  for (const EdgeFunctionConfig& f : snapshot->config.edge_functions) {
    auto it = snapshot->edge_functions.find(f.name);
    if (it == snapshot->edge_functions.end()) continue;
    absl::StrAppend(&out, first ? "" : ", ", "{\"name\": ", net::JsonQuote(f.name),
                    ", \"version\": \"", absl::Hex(it->second->version, absl::kZeroPad16),
                    "\", \"store_revision\": ", f.store_revision, "}");
    first = false;
  }
  GatewayStats st = stats();
  absl::StrAppend(&out, "], \"downstream_connections\": ", st.downstream_connections,
                  ", \"parked_connections\": ", st.parked_connections,
                  ", \"requests\": ", st.requests, "}\n");
  return out;
}

GatewayStats Gateway::stats() const {
  GatewayStats s;
  s.requests = counters_.requests.load();
  s.responses_2xx = counters_.s2xx.load();
  s.responses_3xx = counters_.s3xx.load();
  s.responses_4xx = counters_.s4xx.load();
  s.responses_5xx = counters_.s5xx.load();
  s.upstream_connect_failures = counters_.connect_failures.load();
  s.upstream_resets = counters_.resets.load();
  s.retries = counters_.retries.load();
  s.bad_requests = counters_.bad_requests.load();
  s.downstream_connections = counters_.downstream_connections.load();
  s.parked_connections = counters_.parked_connections.load();
  return s;
}

}  // namespace capstan::gateway
