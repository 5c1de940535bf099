// The gRPC side of rpc::Server: connections whose first bytes are HTTP/2's
// preface go to a net::GrpcServer whose routes are the server's methods;
// each gRPC call becomes a ServerCall run by the same handler, through the
// same admission (limits, draining), interceptors and metrics as a Capstan
// call. GrpcCallBridge carries the HTTP/2 stream's events to the call.
#include <optional>

#include "absl/strings/str_cat.h"
#include "net/grpc_server.h"
#include "rpc/grpc_services.h"
#include "rpc/server.h"
#include "rpc/server_internal.h"
#include "rpc/stream_state.h"

namespace capstan::rpc {
namespace internal {

// One gRPC call's events, for the ServerCall that runs it. Owned by the
// GrpcCall (it lives as long as the HTTP/2 stream); the ServerCall lives as
// long as its handler runs. Whichever ends first unlinks the other. Both
// belong to the call's loop.
class GrpcCallBridge final : public net::GrpcStreamHandler {
 public:
  GrpcCallBridge(Server* server, Server::Method* method, Server::LoopState* state,
                 net::GrpcCallPtr grpc)
      : server_(server), method_(method), state_(state), grpc_(std::move(grpc)) {}
  ~GrpcCallBridge() override {
    if (call_ != nullptr) call_->grpc_bridge_ = nullptr;
  }

  // A handler that reads the client's messages as they come starts now; one
  // that takes one request starts when the request is complete.
  void Open() {
    if (!method_->handler->opens_with_request()) Start(std::nullopt);
  }

  void OnMessage(net::Buffer message) override {
    if (call_ != nullptr) {
      if (call_->stream_ == nullptr) return;
      size_t queued = call_->stream_->DeliverUnmetered(std::move(message));
      if (queued > server_->options_.grpc_max_queued_bytes) {
        grpc_->Finish(absl::ResourceExhaustedError(
            absl::StrCat("the client sent ", queued, " bytes ahead of the handler's reads (limit ",
                         server_->options_.grpc_max_queued_bytes, ")")));
        call_->Cancel();
      }
      return;
    }
    if (started_) return;  // the call finished; what crosses is dropped
    if (++messages_ == 1) first_ = std::move(message);
  }

  void OnHalfClose() override {
    if (call_ != nullptr) {
      if (call_->stream_ != nullptr) call_->stream_->CloseInbound();
      return;
    }
    if (started_) return;
    if (messages_ != 1) {
      // What gRPC C++ answers too.
      grpc_->Finish(absl::InternalError(absl::StrCat(
          "grpc: ", method_->full_name, " takes one request message, got ", messages_)));
      started_ = true;
      return;
    }
    Start(std::move(first_));
  }

  void OnWriteRoom() override {
    if (call_ != nullptr && call_->stream_ != nullptr) call_->stream_->SetWriteBlocked(false);
  }

  // RST_STREAM, the deadline, a lost connection, the server's shutdown: the
  // handler sees ServerContext::cancelled() and its reads and writes end.
  void OnDone(bool cancelled) override {
    if (call_ != nullptr && cancelled) call_->Cancel();
  }

  void Unlink() { call_ = nullptr; }

 private:
  void Start(std::optional<net::Buffer> request) {
    started_ = true;
    mesh::AdaptiveConcurrencyLimiter* limiter = nullptr;
    Clock::time_point deadline = grpc_->deadline();
    absl::Status refused = server_->Admit(state_, method_, deadline <= Clock::now(), &limiter);
    if (!refused.ok()) {
      grpc_->Finish(refused);
      return;
    }
    auto call = std::unique_ptr<ServerCall>(new ServerCall());
    call->grpc_call_ = grpc_;
    call->grpc_bridge_ = this;
    if (request.has_value()) call->request_ = std::move(*request);
    if (method_->handler->streaming()) {
      call->stream_ = std::make_unique<StreamState>(state_->loop);
      // A request-first handler started after the client half-closed.
      if (request.has_value()) call->stream_->CloseInbound();
    }
    ServerContext& ctx = call->context_;
    ctx.loop_ = state_->loop;
    ctx.method_ = method_->full_name;
    ctx.deadline_ = deadline;
    ctx.grpc_ = true;
    ctx.tls_ = server_->tls_ != nullptr;
    ctx.peer_identity_ = grpc_->shared_peer_identity();
    for (const auto& [name, value] : grpc_->metadata()) ctx.metadata_.emplace_back(name, value);
    call_ = call.get();
    server_->Launch(state_, std::move(call), method_, limiter);
  }

  Server* server_;
  Server::Method* method_;
  Server::LoopState* state_;
  net::GrpcCallPtr grpc_;
  ServerCall* call_ = nullptr;
  bool started_ = false;
  int messages_ = 0;
  net::Buffer first_;
};

void UnlinkGrpcBridge(ServerCall* call) {
  if (call->grpc_bridge_ != nullptr) {
    call->grpc_bridge_->Unlink();
    call->grpc_bridge_ = nullptr;
  }
}

}  // namespace internal

void Server::AddBuiltinServices() {
  if (!builtin_services_.empty()) return;  // a Start that failed added them
  if (options_.health_service) {
    builtin_services_.push_back(internal::NewHealthService(this));
    AddService(builtin_services_.back().get());
    for (auto& m : method_list_) {
      if (m->full_name.starts_with(internal::kHealthServiceName)) m->serves_while_draining = true;
    }
  }
  if (options_.reflection_service) {
    for (auto& service : internal::NewReflectionServices(this)) {
      builtin_services_.push_back(std::move(service));
      AddService(builtin_services_.back().get());
    }
  }
}

void Server::SetUpGrpc() {
  if (!options_.grpc) return;
  net::GrpcServerOptions grpc_options;
  grpc_options.max_receive_message_bytes = options_.max_frame_size;
  grpc_ = std::make_unique<net::GrpcServer>(grpc_options);
  for (auto& method : method_list_) {
    Method* m = method.get();
    grpc_->AddStream(absl::StrCat("/", m->full_name), [this, m](const net::GrpcCallPtr& grpc) {
      auto bridge =
          std::make_unique<internal::GrpcCallBridge>(this, m, StateOf(grpc->loop()), grpc);
      bridge->Open();
      return bridge;
    });
  }
  grpc_->Attach(group_);
}

bool Server::TakesGrpc(net::Socket& socket) const {
  // HTTP/2's client preface begins "PRI * HTTP/2.0"; a Capstan frame begins
  // with kMagic (0xC7), so one byte decides.
  char first = 0;
  socket.input().CopyTo(&first, 1);
  return first == 'P';
}

void Server::ServeGrpc(std::shared_ptr<net::Socket> socket) { grpc_->Serve(std::move(socket)); }

void Server::ShutdownGrpc(Clock::time_point deadline) {
  if (grpc_ == nullptr) return;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  grpc_->Shutdown(std::max(left, std::chrono::milliseconds(0)));
}

}  // namespace capstan::rpc
