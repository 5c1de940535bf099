// StoreServer: a running `capstan store` member. Opens the Store, serves the
// etcd v3 gRPC API on the client URLs and /metrics and /health on the metrics
// URLs, and shuts all of it down in order.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "net/grpc_server.h"
#include "net/http_server.h"
#include "net/loop_group.h"
#include "net/worker_pool.h"
#include "store/peer.h"
#include "store/store.h"
#include "store/transport_security.h"

namespace capstan::store {

struct StoreServerConfig {
  StoreOptions store;
  std::vector<std::string> listen_client_urls{"http://127.0.0.1:2379"};
  std::vector<std::string> listen_metrics_urls;
  std::vector<std::string> listen_peer_urls;  // empty: the advertised peer URLs
  // Event loops serving clients (0: one per hardware thread but one, which
  // is left to the raft loop that writes and applies the log).
  int client_loops = 0;
  // Null: the client port runs client_loops loops of its own. Else the
  // client listeners and the metrics listeners serve on this caller-owned
  // group (client_loops is then unused): it must outlive the server, and
  // Shutdown closes what the server has on its loops and lets the answers
  // still posted to them run, but leaves the group running (the caller
  // stops it after every server on it). Raft, the applier, RocksDB and the
  // blocking work of handlers keep their own threads either way.
  net::LoopGroup* client_group = nullptr;
  // TLS of the client URLs (and of https metrics URLs) and of the peer
  // URLs, as etcd's flags (transport_security.h). A URL's scheme decides
  // whether its listener speaks TLS; https without a certificate is an error.
  TlsInfo client_tls;
  TlsInfo peer_tls;
};

class StoreServer {
 public:
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(StoreServerConfig config);
  ~StoreServer();

  // Stops serving: in-flight RPCs get up to `grace` to finish.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
  const std::vector<int>& client_ports() const { return client_ports_; }
  const std::vector<int>& metrics_ports() const { return metrics_ports_; }
  const std::vector<int>& peer_ports() const { return peer_ports_; }
  Store* store() { return store_.get(); }

 private:
  StoreServer() = default;
  absl::Status Init(StoreServerConfig config);
  // On a caller's group: runs what was posted to its loops so far (answers
  // from the store and the worker pool to calls that are gone), so nothing
  // posted by the server is left to run after it is destroyed.
  void FlushSharedLoops();

  metrics::Registry metrics_;
  std::unique_ptr<Store> store_;
  // Clients reach the API through client_server_ on client_loops_ (every
  // method native); members talk to each other through peer_grpc_
  // (libgrpc++).
  // The loops the client port serves on: own_client_loops_ or the
  // caller's StoreServerConfig::client_group.
  std::unique_ptr<net::LoopGroup> own_client_loops_;
  net::LoopGroup* client_loops_ = nullptr;
  std::unique_ptr<net::GrpcServer> client_server_;
  std::unique_ptr<net::WorkerPool> workers_;
  std::unique_ptr<grpc::Service> peer_service_;
  std::unique_ptr<grpc::Server> peer_grpc_;
  std::unique_ptr<PeerTransport> transport_;
  std::vector<int> peer_ports_;
  std::vector<std::unique_ptr<net::HttpServer>> http_;
  std::vector<int> client_ports_;
  std::vector<int> metrics_ports_;
  // Server contexts of the https client and metrics listeners, rebuilt when
  // the certificate files change.
  std::shared_ptr<net::TlsReloader> client_tls_;
  std::shared_ptr<net::TlsReloader> metrics_tls_;
  bool shut_down_ = false;
};

}  // namespace capstan::store
