// Unary gRPC calls over raw HTTP/2 for the store benchmark's request
// workloads (put, range, txn). On this 2-core machine the load generator
// shares the CPU with the server: the gRPC C++ client spends about 30 us of
// CPU per call (its completion queue threads, a protobuf parse of every
// response), as much as the server spends on a put, so past a few clients
// the generator, not the server, set the throughput. This pool speaks gRPC
// framing directly through nghttp2 on one thread with epoll over all its
// connections: requests are serialized by the caller, responses handed back
// as bytes (parsed only when the workload needs a field).
//
// Thread-safety: Send only on the pool's thread (from the start function or
// a completion); Start, Stop and error from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "google/protobuf/message_lite.h"

namespace capstan::bench {

class RawUnaryPool {
 public:
  // The call's status (from grpc-status, or why the stream failed) and the
  // response message without its gRPC prefix.
  using Done = std::function<void(absl::Status, std::string_view response)>;

  // Opens `connections` HTTP/2 connections, spread over `endpoints` (host:port).
  static absl::StatusOr<std::unique_ptr<RawUnaryPool>> Connect(
      const std::vector<std::string>& endpoints, int connections);
  ~RawUnaryPool();
  RawUnaryPool(const RawUnaryPool&) = delete;
  RawUnaryPool& operator=(const RawUnaryPool&) = delete;

  // Starts the pool's thread, which runs `start` and then serves calls until Stop.
  void Start(std::function<void()> start);
  void Stop();
  // Sends `request` to `path` on connection `client % connections`; `done`
  // runs on the pool's thread.
  void Send(int client, const std::string& path, const google::protobuf::MessageLite& request,
            Done done);
  // Why the pool stopped early ("" while it runs or after a clean stop).
  std::string error() const;

 private:
  struct Call;
  struct Connection;
  RawUnaryPool() = default;
  void Run(const std::function<void()>& start);
  bool Flush(Connection* c);
  void Fail(std::string why);

  std::vector<std::unique_ptr<Connection>> connections_;
  int epoll_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::string error_;  // guarded by mu_
};

}  // namespace capstan::bench
