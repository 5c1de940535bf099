// A C++ client for the etcd v3 API (KV, Txn, Watch, Lease), for Capstan's own
// tools (the store benchmark), the RPC framework's discovery and the gateway.
// It talks to etcd and to `capstan store` alike.
//
// Calls come in two shapes: blocking (returns the response) and async
// (returns at once; the callback runs on a gRPC thread when the answer
// arrives, so it must not block). Requests are spread round-robin over
// `channels` separate HTTP/2 connections to the endpoints, because one
// connection serializes on a single gRPC I/O path and caps throughput.
//
// Thread-safety: every method may be called from any thread. Destroying the
// Client waits until every async call it started has finished (its callback
// has run and gRPC has let go of it), so a callback must not destroy its own
// Client.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace capstan::client {

struct ClientOptions {
  // host:port or http://host:port (clear text), https://host:port (TLS).
  std::vector<std::string> endpoints;
  int channels = 1;  // separate connections, round-robin
  std::chrono::milliseconds timeout{5000};
  // TLS for https:// endpoints, as etcdctl's --cacert, --cert and --key:
  // the CA bundle (PEM) the server's certificate must chain to (empty: the
  // system's roots), and a client certificate and key (PEM) for servers
  // that require one (--client-cert-auth). The server's name is checked
  // against the endpoint's host.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

template <typename Resp>
using Callback = std::function<void(absl::Status, Resp)>;

// A watch stream: events arrive on `on_response` (from a gRPC thread) until
// Cancel() or an error (reported once on `on_done`).
class Watch {
 public:
  virtual ~Watch() = default;
  virtual void Cancel() = 0;
};

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();

  // Blocking calls.
  absl::StatusOr<etcdserverpb::PutResponse> Put(const std::string& key, const std::string& value,
                                                int64_t lease = 0);
  absl::StatusOr<etcdserverpb::RangeResponse> Get(const std::string& key,
                                                  bool serializable = false);
  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& req);
  absl::StatusOr<etcdserverpb::DeleteRangeResponse> Delete(const std::string& key,
                                                           const std::string& range_end = "");
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req);
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(int64_t ttl_seconds, int64_t id = 0);
  absl::StatusOr<etcdserverpb::LeaseRevokeResponse> LeaseRevoke(int64_t id);
  absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(int64_t id,
                                                                        bool keys = false);
  // One keep-alive round trip on its own stream; returns the new TTL (0: gone).
  absl::StatusOr<int64_t> LeaseKeepAliveOnce(int64_t id);

  // Async calls.
  void PutAsync(const etcdserverpb::PutRequest& req, Callback<etcdserverpb::PutResponse> done);
  void RangeAsync(const etcdserverpb::RangeRequest& req,
                  Callback<etcdserverpb::RangeResponse> done);
  void TxnAsync(const etcdserverpb::TxnRequest& req, Callback<etcdserverpb::TxnResponse> done);
  void LeaseGrantAsync(const etcdserverpb::LeaseGrantRequest& req,
                       Callback<etcdserverpb::LeaseGrantResponse> done);

  // Opens a watch with `create`; `on_response` gets every response (created,
  // events, progress, cancel); `on_done` gets the stream's end once.
  std::unique_ptr<Watch> WatchAsync(
      const etcdserverpb::WatchCreateRequest& create,
      std::function<void(const etcdserverpb::WatchResponse&)> on_response,
      std::function<void(absl::Status)> on_done);

  const ClientOptions& options() const { return options_; }

 private:
  struct Conn {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  };
  // Counts an async call from its start until gRPC has dropped it. A finished
  // call still holds its channel for a moment on a gRPC callback thread; if the
  // channel's last reference went with it, the channel would be destroyed on
  // that thread and tear down the completion queue the thread is reading.
  class CallInFlight {
   public:
    explicit CallInFlight(Client* client);
    ~CallInFlight();
    CallInFlight(const CallInFlight&) = delete;
    CallInFlight& operator=(const CallInFlight&) = delete;

   private:
    Client* client_;
  };

  explicit Client(ClientOptions options) : options_(std::move(options)) {}
  Conn& Next();
  template <typename Resp, typename Call>
  absl::StatusOr<Resp> Blocking(Call call);
  template <typename Req, typename Resp, typename Method>
  void Async(const Req& req, Callback<Resp> done, Method method);

  ClientOptions options_;
  std::vector<Conn> conns_;
  std::atomic<uint64_t> next_{0};
  std::mutex calls_mu_;
  std::condition_variable calls_cv_;
  int64_t calls_in_flight_ = 0;  // guarded by calls_mu_
};

}  // namespace capstan::client
