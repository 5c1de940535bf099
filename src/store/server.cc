#include "store/server.h"

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "net/address.h"
#include "net/block_on.h"
#include "store/etcd_grpc.h"

namespace capstan::store {

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(StoreServerConfig config) {
  std::unique_ptr<StoreServer> server(new StoreServer());
  RETURN_IF_ERROR(server->Init(std::move(config)));
  return server;
}

namespace {

struct Listen {
  std::string host;
  int port;
  bool tls;
};

// Parses one flag's URLs; https needs that side's certificate, as etcd
// says it.
absl::Status ParseListenUrls(const std::vector<std::string>& urls, const std::string& flag,
                             const std::string& side, const TlsInfo& tls, std::vector<Listen>* out,
                             std::vector<std::string>* hosts) {
  for (const auto& url : urls) {
    ASSIGN_OR_RETURN(net::Url parsed,
                     net::ParseUrl(url, {.require_port = true, .allow_port_zero = true}));
    if (parsed.scheme != "http" && parsed.scheme != "https") {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", url, "\": the scheme must be http or https"));
    }
    bool https = parsed.scheme == "https";
    if (https && !tls.enabled()) {
      std::string prefix = side == "peer" ? "peer-" : "";
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": TLS key/cert (--", prefix, "cert-file, --", prefix,
                       "key-file) must be provided for ", side, " url ", url,
                       " with HTTPS scheme (or --", prefix, "auto-tls)"));
    }
    if (out != nullptr) out->push_back({parsed.host, parsed.port, https});
    if (hosts != nullptr && std::find(hosts->begin(), hosts->end(), parsed.host) == hosts->end()) {
      hosts->push_back(parsed.host);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StoreServer::Init(StoreServerConfig config) {
  std::vector<Listen> client, metrics, peer;
  std::vector<std::string> client_hosts, peer_hosts;
  if (config.listen_peer_urls.empty()) config.listen_peer_urls = config.store.advertise_peer_urls;
  if (config.store.advertise_client_urls.empty()) {
    config.store.advertise_client_urls = config.listen_client_urls;
  }
  RETURN_IF_ERROR(ParseListenUrls(config.listen_peer_urls, "--listen-peer-urls", "peer",
                                  config.peer_tls, &peer, &peer_hosts));
  RETURN_IF_ERROR(ParseListenUrls(config.store.advertise_peer_urls, "--initial-advertise-peer-urls",
                                  "peer", config.peer_tls, nullptr, &peer_hosts));
  RETURN_IF_ERROR(ParseListenUrls(config.listen_client_urls, "--listen-client-urls", "client",
                                  config.client_tls, &client, &client_hosts));
  RETURN_IF_ERROR(ParseListenUrls(config.store.advertise_client_urls, "--advertise-client-urls",
                                  "client", config.client_tls, nullptr, &client_hosts));
  RETURN_IF_ERROR(ParseListenUrls(config.listen_metrics_urls, "--listen-metrics-urls", "client",
                                  config.client_tls, &metrics, &client_hosts));
  // Certificates: checked (and, with auto TLS, made) before anything opens.
  if (config.client_tls.enabled()) {
    RETURN_IF_ERROR(ResolveTls(&config.client_tls, "", config.store.data_dir + "/fixtures/client",
                               client_hosts));
    ASSIGN_OR_RETURN(
        client_tls_,
        net::TlsReloader::Create(ServerTlsOptions(config.client_tls, {"h2"}), kTlsReloadCheck));
    // The metrics listener speaks HTTP/1.1 only: its own ALPN.
    ASSIGN_OR_RETURN(metrics_tls_,
                     net::TlsReloader::Create(ServerTlsOptions(config.client_tls, {"http/1.1"}),
                                              kTlsReloadCheck));
    // Membership changes a follower forwards to the leader's client URL.
    config.store.client_channel_credentials = GrpcChannelTlsCredentials(config.client_tls);
  }
  if (config.peer_tls.enabled()) {
    RETURN_IF_ERROR(ResolveTls(&config.peer_tls, "peer-", config.store.data_dir + "/fixtures/peer",
                               peer_hosts));
    config.store.peer_channel_credentials = GrpcChannelTlsCredentials(config.peer_tls);
  }

  config.store.metrics = &metrics_;
  // Loops shared with other servers (the gateway's traffic) never wait on an
  // fsync: the raft loop runs every round.
  if (config.client_group != nullptr) config.store.loops_run_rounds = false;
  ASSIGN_OR_RETURN(store_, Store::Open(config.store));

  // Peer traffic: the transport the node sends with, and the service that
  // receives from the other members.
  transport_ =
      std::make_unique<PeerTransport>(store_->member_id(), store_->cluster_id(), store_->node(),
                                      config.store.peer_channel_credentials);
  store_->set_on_members_changed([this] { transport_->UpdatePeers(store_->PeerMembers()); });
  transport_->UpdatePeers(store_->PeerMembers());
  store_->set_peer_stubs([this](uint64_t id) { return transport_->StubFor(id); });
  store_->node()->SetTransport(transport_.get());
  peer_service_ = NewPeerService(store_.get(), config.store.data_dir + "/member/snap");
  {
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(128 << 20);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    peer_ports_.assign(peer.size(), 0);
    for (size_t i = 0; i < peer.size(); ++i) {
      builder.AddListeningPort(absl::StrCat(peer[i].host, ":", peer[i].port),
                               peer[i].tls ? GrpcServerTlsCredentials(config.peer_tls)
                                           : grpc::InsecureServerCredentials(),
                               &peer_ports_[i]);
    }
    builder.RegisterService(peer_service_.get());
    peer_grpc_ = builder.BuildAndStart();
    for (size_t i = 0; i < peer.size(); ++i) {
      if (peer_grpc_ == nullptr || peer_ports_[i] == 0) {
        Shutdown();
        return absl::UnavailableError(
            absl::StrCat("cannot listen on ", config.listen_peer_urls[i],
                         " (is another etcd or capstan using the port?)"));
      }
    }
  }

  net::LoopGroupOptions loop_options;
  // On 2 cores one client loop beside the raft loop serves puts at 20 vs 25
  // us of CPU each, and reads faster too: fewer threads to wake per batch
  // (docs/benchmarks/store-analysis.md).
  loop_options.threads =
      config.client_loops > 0
          ? config.client_loops
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 1);
  loop_options.name = "client";
  if (config.client_group != nullptr) {
    client_loops_ = config.client_group;
  } else {
    ASSIGN_OR_RETURN(own_client_loops_, net::LoopGroup::Start(loop_options));
    client_loops_ = own_client_loops_.get();
  }
  net::GrpcServerOptions server_options;
  // Like etcd: requests up to max-request-bytes get a clear etcd error from
  // the store; the transport rejects anything past that plus 512 KiB.
  server_options.max_receive_message_bytes = config.store.max_request_bytes + 512 * 1024;
  client_server_ = std::make_unique<net::GrpcServer>(server_options);
  // Blocking work of native handlers (checkpoints, hashes, defragmenting).
  workers_ =
      std::make_unique<net::WorkerPool>(net::WorkerPoolOptions{.threads = 2, .name = "store-work"});
  // With --client-cert-auth, the verified client certificate's Common Name
  // is the user when a call carries no token, as etcd does (the name is
  // empty on clear text and when the listener asks for no certificate).
  AddNativeEtcdMethods(store_.get(), client_server_.get(), workers_.get(),
                       [](const net::GrpcCall& call) -> std::optional<std::string> {
                         const std::string& cn = call.peer_common_name();
                         if (cn.empty()) return std::nullopt;
                         return cn;
                       });
  for (size_t i = 0; i < client.size(); ++i) {
    absl::StatusOr<int> port =
        client_server_->Listen(client_loops_, client[i].host, client[i].port,
                               client[i].tls ? client_tls_->Source() : nullptr);
    if (!port.ok()) {
      Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", config.listen_client_urls[i],
                       " (is another etcd or capstan using the port?): ", port.status().message()));
    }
    client_ports_.push_back(*port);
  }

  for (const auto& m : metrics) {
    net::HttpServerOptions http_options;
    // On a shared group the metrics share its loops (the handlers are quick
    // and never wait on a loop); alone they keep a loop each, apart from
    // the client loops' load.
    http_options.group = config.client_group;
    if (m.tls) http_options.tls = metrics_tls_->Source();
    auto http = std::make_unique<net::HttpServer>(http_options);
    http->Handle("/metrics", [this] {
      return net::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                               metrics_.RenderText()};
    });
    http->Handle("/health", [this] {
      std::string reason = store_->Unhealthy();
      if (reason.empty()) {
        return net::HttpResponse{200, "application/json", "{\"health\":\"true\",\"reason\":\"\"}"};
      }
      for (char& c : reason) {
        if (c == '"' || c == '\\') c = '\'';
      }
      return net::HttpResponse{503, "application/json",
                               "{\"health\":\"false\",\"reason\":\"" + reason + "\"}"};
    });
    absl::Status st = http->Start(m.host, m.port);
    if (!st.ok()) {
      Shutdown();
      return st;
    }
    metrics_ports_.push_back(http->port());
    http_.push_back(std::move(http));
  }
  CAPSTAN_LOG(info, "serving etcd v3 API", "client_urls",
              absl::StrJoin(config.listen_client_urls, ","), "peer_urls",
              absl::StrJoin(config.listen_peer_urls, ","), "metrics_urls",
              absl::StrJoin(config.listen_metrics_urls, ","));
  return absl::OkStatus();
}

StoreServer::~StoreServer() { Shutdown(); }

void StoreServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  // Clients first (their calls in flight get the grace).
  if (client_server_) client_server_->Shutdown(grace);
  // Runs what is queued; the calls waiting on it resume on the loops, which
  // still run.
  workers_.reset();
  if (own_client_loops_) {
    own_client_loops_->Stop();
  } else {
    FlushSharedLoops();
  }
  if (peer_grpc_) {
    peer_grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    peer_grpc_->Wait();
  }
  for (auto& h : http_) h->Stop();
  // The node sends through the transport until it stops: stop it first.
  if (store_) store_->Stop();
  if (transport_) transport_->Stop();
  // Proposals the stopped store failed were answered by posting to the
  // calls' loops: those answers run while the server still exists.
  if (!own_client_loops_) FlushSharedLoops();
}

void StoreServer::FlushSharedLoops() {
  if (client_loops_ == nullptr) return;
  // Each loop runs posted functions in order: once this one has run, so
  // has everything posted before it.
  for (int i = 0; i < client_loops_->size(); ++i) net::RunOn(client_loops_->loop(i), [] {});
}

}  // namespace capstan::store
