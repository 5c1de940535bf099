#include "rpc/server.h"

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "net/block_on.h"
#include "net/socket.h"

namespace capstan::rpc {

// A client connection as the server sees it; shared by its reader and by the
// calls running on it (a call may outlive the reader when the peer leaves).
struct ServerCall::Connection {
  std::shared_ptr<net::Socket> socket;
  absl::flat_hash_map<uint32_t, ServerCall*> calls;
  uint32_t max_stream_id = 0;
};

// Per loop: touched only on that loop's thread.
struct Server::LoopState {
  net::EventLoop* loop = nullptr;
  std::unique_ptr<net::Listener> listener;
  std::vector<std::weak_ptr<ServerCall::Connection>> connections;
  bool draining = false;
};

std::string_view ServerContext::Metadata(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return v;
  }
  return {};
}

// Takes the call out of its connection's table; false when nobody waits for
// the answer any more (cancelled, or the connection is gone).
bool ServerCall::Detach() {
  if (finished_) return false;
  finished_ = true;
  Connection& conn = *connection_;
  auto it = conn.calls.find(stream_id_);
  if (it == conn.calls.end() || it->second != this) return false;
  conn.calls.erase(it);
  return !conn.socket->closed();
}

Meta ServerCall::ResponseMeta(const absl::Status& status) const {
  Meta meta;
  if (!status.ok()) {
    meta.status_code = static_cast<uint32_t>(status.code());
    meta.status_message = std::string_view(status.message().data(), status.message().size());
  }
  for (const auto& [k, v] : context_.trailers_) meta.entries.emplace_back(k, v);
  return meta;
}

void ServerCall::Finish(const absl::Status& status, const google::protobuf::MessageLite* message) {
  if (!Detach()) return;
  net::Socket& socket = *connection_->socket;
  Meta meta = ResponseMeta(status);
  if (status.ok() && message != nullptr) {
    size_t size = message->ByteSizeLong();
    AppendFrameWith(&socket.output(), FrameType::kResponse, frame_flags::kHasMessage, stream_id_,
                    meta, size, [&](char* dst) { SerializeTo(*message, size, dst); });
  } else {
    AppendFrame(&socket.output(), FrameType::kResponse, 0, stream_id_, meta, net::Buffer());
  }
  socket.MarkWritten();
}

void ServerCall::FinishBytes(const absl::Status& status, net::Buffer message) {
  if (!Detach()) return;
  net::Socket& socket = *connection_->socket;
  bool has = status.ok();
  AppendFrame(&socket.output(), FrameType::kResponse, has ? frame_flags::kHasMessage : 0,
              stream_id_, ResponseMeta(status), has ? std::move(message) : net::Buffer());
  socket.MarkWritten();
}

namespace internal {

net::Task<void> GenericMethod::Run(ServerCall* call) {
  absl::StatusOr<net::Buffer> response = co_await fn_(call->context(), call->TakeRequest());
  if (response.ok()) {
    call->FinishBytes(absl::OkStatus(), std::move(response).value());
  } else {
    call->FinishBytes(response.status(), net::Buffer());
  }
}

}  // namespace internal

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() { Shutdown(std::chrono::seconds(0)); }

void Server::AddService(Service* service) {
  for (auto& [method, handler] : service->methods_) {
    methods_[absl::StrCat(service->name(), "/", method)] = handler.get();
  }
}

absl::Status Server::Start() {
  if (started_) return absl::FailedPreconditionError("server already started");
  net::LoopGroupOptions group_options;
  group_options.threads = options_.threads;
  group_options.loop.backend = options_.backend;
  group_options.name = options_.name;
  ASSIGN_OR_RETURN(group_, net::LoopGroup::Start(group_options));
  // Bind on the first loop to learn the port (port 0 picks one), then the
  // others on the same port.
  int port = options_.port;
  for (int i = 0; i < group_->size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = group_->loop(i);
    LoopState* raw = state.get();
    absl::Status st;
    net::RunOn(raw->loop, [&] {
      auto listener = net::Listener::Bind(raw->loop, options_.host, port, /*reuse_port=*/true);
      if (!listener.ok()) {
        st = listener.status();
        return;
      }
      raw->listener = std::move(listener).value();
      port = raw->listener->port();
      raw->loop->Spawn(AcceptLoop(raw));
    });
    loops_.push_back(std::move(state));
    if (!st.ok()) {
      Shutdown(std::chrono::seconds(0));
      return st;
    }
  }
  port_ = port;
  started_ = true;
  CAPSTAN_LOG(info, "rpc server listening", "host", options_.host, "port", port_, "threads",
              options_.threads, "io", net::IoBackendName(group_->backend()));
  return absl::OkStatus();
}

net::Task<void> Server::AcceptLoop(LoopState* state) {
  while (true) {
    auto accepted = co_await state->listener->Accept();
    if (!accepted.ok()) co_return;  // the listener closed
    auto conn = std::make_shared<ServerCall::Connection>();
    conn->socket = std::move(accepted).value();
    // Connections that ended leave the list as new ones arrive.
    std::erase_if(state->connections, [](const auto& weak) { return weak.expired(); });
    state->connections.push_back(conn);
    state->loop->Spawn(ServeConnection(state, std::move(conn)));
  }
}

net::Task<void> Server::ServeConnection(LoopState* state,
                                        std::shared_ptr<ServerCall::Connection> conn) {
  connections_.fetch_add(1, std::memory_order_relaxed);
  net::Socket& socket = *conn->socket;
  DecodeLimits limits{.max_frame_size = options_.max_frame_size};
  Frame frame;
  std::string error;
  bool open = true;
  while (open) {
    while (true) {
      DecodeStatus st = DecodeFrame(socket.input(), limits, &frame, &error);
      if (st == DecodeStatus::kNeedMore) break;
      if (st == DecodeStatus::kError) {
        protocol_errors_.fetch_add(1, std::memory_order_relaxed);
        CAPSTAN_LOG(warn, "rpc protocol error, closing connection", "reason", error);
        open = false;
        break;
      }
      switch (frame.type) {
        case FrameType::kRequest:
          HandleRequest(state, conn, frame);
          break;
        case FrameType::kCancel: {
          auto it = conn->calls.find(frame.stream_id);
          if (it != conn->calls.end()) {
            it->second->context_.cancelled_ = true;
            conn->calls.erase(it);
          }
          break;
        }
        case FrameType::kPing:
          if (frame.payload.size() <= kMaxPingPayload) {
            AppendFrame(&socket.output(), FrameType::kPong, 0, 0, Meta{}, std::move(frame.payload));
            socket.MarkWritten();
          }
          break;
        default:
          // MESSAGE and WINDOW belong to streams (not served here yet);
          // PONG and GOAWAY need nothing from a server.
          break;
      }
    }
    if (!open) break;
    if (!(co_await socket.ReadMore()).ok()) break;
  }
  // Calls still running finish into the void.
  for (auto& [id, call] : conn->calls) call->context_.cancelled_ = true;
  conn->calls.clear();
  socket.Close();
  connections_.fetch_sub(1, std::memory_order_relaxed);
}

void Server::HandleRequest(LoopState* state, const std::shared_ptr<ServerCall::Connection>& conn,
                           Frame& frame) {
  net::Socket& socket = *conn->socket;
  auto reject = [&](absl::StatusCode code, std::string_view message) {
    Meta meta;
    meta.status_code = static_cast<uint32_t>(code);
    meta.status_message = message;
    AppendFrame(&socket.output(), FrameType::kResponse, 0, frame.stream_id, meta, net::Buffer());
    socket.MarkWritten();
  };
  if (frame.stream_id == 0 || conn->calls.contains(frame.stream_id)) {
    reject(absl::StatusCode::kInvalidArgument, "stream id is 0 or already open");
    return;
  }
  if (state->draining) {
    reject(absl::StatusCode::kUnavailable,
           "server is shutting down (not processed; retry elsewhere)");
    return;
  }
  auto method =
      methods_.find(absl::string_view(frame.meta.method.data(), frame.meta.method.size()));
  if (method == methods_.end()) {
    reject(absl::StatusCode::kUnimplemented,
           absl::StrCat("unknown method '", std::string(frame.meta.method), "'"));
    return;
  }
  if (frame.meta.timeout_us == 0) {
    reject(absl::StatusCode::kDeadlineExceeded, "deadline passed before the call started");
    return;
  }
  auto call = std::unique_ptr<ServerCall>(new ServerCall());
  call->stream_id_ = frame.stream_id;
  call->connection_ = conn;
  call->request_ = std::move(frame.payload);
  ServerContext& ctx = call->context_;
  ctx.loop_ = state->loop;
  ctx.method_ = std::string(frame.meta.method);
  if (frame.meta.timeout_us > 0) {
    ctx.deadline_ = Clock::now() + std::chrono::microseconds(frame.meta.timeout_us);
  }
  for (const auto& [k, v] : frame.meta.entries) ctx.metadata_.emplace_back(k, v);
  conn->calls[frame.stream_id] = call.get();
  conn->max_stream_id = std::max(conn->max_stream_id, frame.stream_id);
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  calls_started_.fetch_add(1, std::memory_order_relaxed);
  // Runs inline until the handler first waits: a handler that answers at
  // once has its response queued before the next frame is decoded.
  state->loop->StartOwned(RunCall(state, std::move(call), method->second));
}

net::Task<void> Server::RunCall(LoopState* state, std::unique_ptr<ServerCall> call,
                                MethodHandler* handler) {
  co_await handler->Run(call.get());
  if (!call->finished())
    call->Finish(absl::UnknownError("handler ended without a response"), nullptr);
  CallDone();
}

void Server::CallDone() {
  if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

Server::Stats Server::stats() const {
  return Stats{connections_.load(), in_flight_.load(), calls_started_.load(),
               protocol_errors_.load()};
}

void Server::Shutdown(Clock::duration grace) {
  if (shut_down_ || group_ == nullptr) return;
  shut_down_ = true;
  // 1. No new connections or calls; clients hear GOAWAY.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      raw->draining = true;
      if (raw->listener) raw->listener->Close();
      for (auto& weak : raw->connections) {
        auto conn = weak.lock();
        if (!conn || conn->socket->closed()) continue;
        Meta meta;
        meta.last_stream_id = conn->max_stream_id;
        AppendFrame(&conn->socket->output(), FrameType::kGoAway, 0, 0, meta, net::Buffer());
        conn->socket->MarkWritten();
      }
    });
  }
  // 2. Let the calls in flight finish.
  {
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait_until(lock, Clock::now() + grace, [this] { return in_flight_.load() == 0; });
  }
  if (in_flight_.load() > 0) {
    CAPSTAN_LOG(warn, "rpc server stopping with calls still running", "calls", in_flight_.load());
  }
  // 3. Close every connection (after its last responses are sent).
  for (auto& state : loops_) {
    net::BlockOn(state->loop, [](LoopState* raw) -> net::Task<void> {
      // Clients that stopped reading hold the shutdown up for one second in
      // all, not one each.
      auto give_up_at = Clock::now() + std::chrono::seconds(1);
      for (auto& weak : raw->connections) {
        auto conn = weak.lock();
        if (!conn) continue;
        net::Socket* socket = conn->socket.get();
        net::Timer give_up([socket] { socket->Close(); });
        give_up.Arm(raw->loop, give_up_at);
        co_await socket->Drained();
        socket->Close();
      }
      raw->connections.clear();
    }(state.get()));
  }
  group_->Stop();
}

}  // namespace capstan::rpc
