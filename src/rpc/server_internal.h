// Server internals shared by server.cc and server_status.cc.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/metrics.h"
#include "mesh/concurrency_limiter.h"
#include "net/socket.h"
#include "rpc/server.h"

namespace capstan::rpc {

inline constexpr int kStatusCodes = 17;

// A client connection as the server sees it; shared by its reader and by the
// calls running on it (a call may outlive the reader when the peer leaves).
struct ServerCall::Connection {
  std::shared_ptr<net::Socket> socket;
  absl::flat_hash_map<uint32_t, ServerCall*> calls;
  uint32_t max_stream_id = 0;
  std::string peer;
  Clock::time_point opened;
  uint64_t calls_started = 0;
  // TLS: the client certificate's identity (null without one).
  std::shared_ptr<const net::TlsPeerIdentity> peer_identity;
};

// A method as the server serves it: handler, limits, metrics.
struct Server::Method {
  size_t index = 0;
  std::string full_name;
  MethodHandler* handler = nullptr;
  int max_concurrency = 0;
  // Answered while the server drains (the health service says NOT_SERVING
  // then rather than refusing).
  bool serves_while_draining = false;
  metrics::Gauge* in_flight = nullptr;
  // Sum over loops of each loop's adaptive limit.
  metrics::Gauge* limit = nullptr;
  metrics::Counter* shed = nullptr;
  metrics::Histogram* latency = nullptr;
  std::array<metrics::Counter*, kStatusCodes> handled{};
  metrics::Counter* Handled(absl::StatusCode code) {
    auto c = static_cast<size_t>(code);
    return handled[c < handled.size() ? c : static_cast<size_t>(absl::StatusCode::kUnknown)];
  }
};

// Per loop: touched only on that loop's thread.
struct Server::LoopState {
  net::EventLoop* loop = nullptr;
  std::unique_ptr<net::Listener> listener;
  std::vector<std::weak_ptr<ServerCall::Connection>> connections;
  bool draining = false;
  // By Method::index; with the limit each last added to Method::limit.
  std::vector<std::unique_ptr<mesh::AdaptiveConcurrencyLimiter>> limiters;
  std::vector<int> published_limits;
};

namespace internal {
// server_grpc.cc: the call and the gRPC stream's bridge stop pointing at
// each other (the call finished or is destroyed).
void UnlinkGrpcBridge(ServerCall* call);
}  // namespace internal

}  // namespace capstan::rpc
