#include "rpc/server.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "mesh/discovery.h"
#include "net/address.h"
#include "net/block_on.h"
#include "net/grpc_server.h"
#include "net/http_server.h"
#include "net/socket.h"
#include "rpc/server_internal.h"
#include "rpc/stream_state.h"

namespace capstan::rpc {

namespace {

// Finer than the store's buckets: RPC handlers answer in microseconds.
std::vector<double> RpcLatencyBuckets() {
  return {10e-6, 25e-6, 50e-6,  100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
          25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0,    10.0};
}

std::string PeerOf(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {};
  bool v4 = addr.ss_family == AF_INET;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&addr);
  inet_ntop(addr.ss_family, v4 ? static_cast<void*>(&a4->sin_addr) : &a6->sin6_addr, host,
            sizeof(host));
  return mesh::FormatHostPort(host, ntohs(v4 ? a4->sin_port : a6->sin6_port));
}

}  // namespace

std::string_view ServerContext::Metadata(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return v;
  }
  return {};
}

const net::TlsPeerIdentity& ServerContext::peer_identity() const {
  static const net::TlsPeerIdentity kNone;
  return peer_identity_ != nullptr ? *peer_identity_ : kNone;
}

ServerCall::~ServerCall() { internal::UnlinkGrpcBridge(this); }

void ServerCall::FinishGrpc(const absl::Status& status) {
  // HTTP/2 field names are lower case; gRPC reserves the grpc- ones.
  for (const auto& [key, value] : context_.trailers_) {
    std::string name = absl::AsciiStrToLower(key);
    if (name.empty() || name.starts_with("grpc-") || name.starts_with(":")) continue;
    grpc_call_->AddTrailer(name, value);
  }
  grpc_call_->Finish(status);
}

// Takes the call out of its connection's table; false when nobody waits for
// the answer any more (cancelled, or the connection is gone).
bool ServerCall::Detach() {
  if (finished_) return false;
  finished_ = true;
  // A coroutine of the handler still waiting to read or write returns.
  if (stream_) stream_->End();
  if (grpc_call_ != nullptr) {
    internal::UnlinkGrpcBridge(this);
    return !grpc_call_->done();
  }
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
  if (!finished_) code_ = status.code();
  if (!Detach()) return;
  if (grpc_call_ != nullptr) {
    if (status.ok() && message != nullptr) {
      size_t size = message->ByteSizeLong();
      grpc_call_->WriteFramed(
          net::FrameGrpcMessage(size, [&](char* dst) { SerializeTo(*message, size, dst); }));
    }
    FinishGrpc(status);
    return;
  }
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
  if (!finished_) code_ = status.code();
  if (!Detach()) return;
  if (grpc_call_ != nullptr) {
    if (status.ok()) grpc_call_->Write(std::move(message));
    FinishGrpc(status);
    return;
  }
  net::Socket& socket = *connection_->socket;
  bool has = status.ok();
  AppendFrame(&socket.output(), FrameType::kResponse, has ? frame_flags::kHasMessage : 0,
              stream_id_, ResponseMeta(status), has ? std::move(message) : net::Buffer());
  socket.MarkWritten();
}

void ServerCall::Cancel() {
  context_.cancelled_ = true;
  if (stream_) stream_->End();
}

net::Task<bool> ServerCall::ReadBytes(net::Buffer* message) {
  if (request_has_message_) {
    request_has_message_ = false;
    *message = std::move(request_);
    co_return true;
  }
  // The stream has ended once the call finished or was cancelled.
  if (stream_ == nullptr) co_return false;
  while (!stream_->has_message()) {
    if (stream_->ended() || stream_->inbound_closed()) co_return false;
    co_await stream_->Readable();
  }
  if (stream_->ended()) co_return false;
  if (grpc_call_ != nullptr) {
    // HTTP/2 returned the credit as the bytes arrived.
    stream_->TakeUnmetered(message);
    co_return true;
  }
  internal::SendCredit(*connection_->socket, stream_id_, stream_->Take(message));
  co_return true;
}

net::Task<bool> ServerCall::WriteWith(size_t size, absl::FunctionRef<void(char*)> write) {
  if (stream_ == nullptr) co_return false;
  if (grpc_call_ != nullptr) {
    while (stream_->write_blocked() && !stream_->ended()) co_await stream_->Writable(size);
    if (stream_->ended() || grpc_call_->done()) co_return false;
    // Queued either way; false says the call's output reached its high mark:
    // the next write waits for the bridge's OnWriteRoom.
    if (!grpc_call_->WriteFramed(net::FrameGrpcMessage(size, write))) {
      stream_->SetWriteBlocked(true);
    }
    co_return true;
  }
  while (true) {
    if (stream_->ended() || connection_->socket->closed()) co_return false;
    if (stream_->window().CanSend(size)) break;
    co_await stream_->Writable(size);
  }
  internal::SendMessage(*stream_, *connection_->socket, stream_id_, size, write);
  co_return true;
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
  service_names_.push_back(service->name());
  for (auto& [name, handler] : service->methods_) {
    auto m = std::make_unique<Method>();
    m->index = method_list_.size();
    m->full_name = absl::StrCat(service->name(), "/", name);
    m->handler = handler.get();
    methods_[m->full_name] = m.get();
    method_list_.push_back(std::move(m));
  }
}

int Server::admin_port() const { return admin_ ? admin_->port() : 0; }

void Server::RegisterMetrics() {
  for (auto& m : method_list_) {
    metrics::Labels method{{"method", m->full_name}};
    for (int c = 0; c < kStatusCodes; ++c) {
      metrics::Labels labels = method;
      labels.emplace_back("code", absl::StatusCodeToString(static_cast<absl::StatusCode>(c)));
      m->handled[c] =
          metrics_->AddCounter("capstan_rpc_server_handled_total",
                               "RPC calls finished, by method and status code.", std::move(labels));
    }
    m->latency = metrics_->AddHistogram("capstan_rpc_server_handling_seconds",
                                        "Time from a call's arrival to its answer.",
                                        RpcLatencyBuckets(), method);
    m->in_flight = metrics_->AddGauge("capstan_rpc_server_in_flight", "Calls running now.", method);
    m->shed = metrics_->AddCounter(
        "capstan_rpc_server_shed_total",
        "Calls refused by a concurrency limit (RESOURCE_EXHAUSTED, not processed).", method);
    m->limit = metrics_->AddGauge("capstan_rpc_server_concurrency_limit",
                                  "The adaptive concurrency limit, summed over the server's loops.",
                                  method);
  }
}

absl::Status Server::Start() {
  if (started_) return absl::FailedPreconditionError("server already started");
  AddBuiltinServices();
  for (const auto& [name, limit] : options_.max_concurrency) {
    auto it = methods_.find(name);
    if (it == methods_.end()) {
      std::string known;
      for (const auto& m : method_list_)
        absl::StrAppend(&known, known.empty() ? "" : ", ", m->full_name);
      return absl::InvalidArgumentError(absl::StrCat("max_concurrency names '", name,
                                                     "', which is not a method of this server (",
                                                     known.empty() ? "none" : known, ")"));
    }
    if (limit < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_concurrency for ", name, " must be at least 1, not ", limit));
    }
    it->second->max_concurrency = limit;
  }
  RETURN_IF_ERROR(SetUpTls());
  if (options_.metrics == nullptr) own_metrics_ = std::make_unique<metrics::Registry>();
  metrics_ = options_.metrics != nullptr ? options_.metrics : own_metrics_.get();
  RegisterMetrics();
  started_at_ = Clock::now();
  if (options_.group != nullptr) {
    group_ = options_.group;
  } else {
    net::LoopGroupOptions group_options;
    group_options.threads = options_.threads;
    group_options.loop.backend = options_.backend;
    group_options.name = options_.name;
    ASSIGN_OR_RETURN(own_group_, net::LoopGroup::Start(group_options));
    group_ = own_group_.get();
  }
  // Bind on the first loop to learn the port (port 0 picks one), then the
  // others on the same port.
  // Before the first connection: the gRPC side's routes are fixed then.
  SetUpGrpc();
  int port = options_.port;
  // Every loop's state exists before the first connection (a gRPC call finds
  // its loop's state in loops_).
  for (int i = 0; i < group_->size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = group_->loop(i);
    if (options_.adaptive_concurrency_limit) {
      for (auto& m : method_list_) {
        state->limiters.push_back(
            std::make_unique<mesh::AdaptiveConcurrencyLimiter>(options_.adaptive_limit));
        state->published_limits.push_back(state->limiters.back()->limit());
        m->limit->Add(state->limiters.back()->limit());
      }
    }
    loops_.push_back(std::move(state));
  }
  for (auto& state : loops_) {
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
      tasks_.fetch_add(1);
      raw->loop->Spawn(AcceptLoop(raw));
    });
    if (!st.ok()) {
      Shutdown(std::chrono::seconds(0));
      return st;
    }
  }
  port_ = port;
  started_ = true;
  if (!options_.admin_address.empty()) {
    absl::StatusOr<net::Url> admin_url =
        net::ParseUrl(options_.admin_address, {.require_port = true, .allow_port_zero = true});
    absl::Status st = admin_url.status();
    if (st.ok()) {
      admin_ = std::make_unique<net::HttpServer>();
      admin_->Handle("/metrics", [this] {
        return net::HttpResponse{.content_type = "text/plain; version=0.0.4; charset=utf-8",
                                 .body = metrics_->RenderText()};
      });
      admin_->Handle("/status", [this] { return net::HttpResponse{.body = StatusText()}; });
      st = admin_->Start(admin_url->host, admin_url->port);
    }
    if (!st.ok()) {
      Shutdown(std::chrono::seconds(0));
      return absl::InvalidArgumentError(
          absl::StrCat("admin address '", options_.admin_address, "': ", st.message()));
    }
  }
  CAPSTAN_LOG(info, "rpc server listening", "host", options_.host, "port", port_, "threads",
              group_->size(), "shared_loops", own_group_ == nullptr, "io",
              net::IoBackendName(group_->backend()));
  return absl::OkStatus();
}

net::Task<void> Server::AcceptLoop(LoopState* state) {
  while (true) {
    auto accepted = co_await state->listener->Accept();
    if (!accepted.ok()) break;  // the listener closed
    if (!StartTls(**accepted)) continue;
    auto conn = std::make_shared<ServerCall::Connection>();
    conn->socket = std::move(accepted).value();
    conn->peer = PeerOf(conn->socket->fd());
    conn->opened = Clock::now();
    // Connections that ended leave the list as new ones arrive.
    std::erase_if(state->connections, [](const auto& weak) { return weak.expired(); });
    state->connections.push_back(conn);
    tasks_.fetch_add(1);
    state->loop->Spawn(ServeConnection(state, std::move(conn)));
  }
  TaskEnded();
}

net::Task<void> Server::ServeConnection(LoopState* state,
                                        std::shared_ptr<ServerCall::Connection> conn) {
  net::Socket& socket = *conn->socket;
  if (tls_ != nullptr) {
    bool handshake_done = co_await FinishHandshake(socket);
    if (!handshake_done) co_return;
    // Once per connection: every call on it shares what the certificate says.
    net::TlsPeerIdentity identity = socket.tls()->PeerIdentity();
    if (!identity.serial.empty()) {
      conn->peer_identity = std::make_shared<const net::TlsPeerIdentity>(std::move(identity));
    }
  }
  if (grpc_ != nullptr) {
    // The first byte tells the protocols apart: Capstan frames start with
    // kMagic, HTTP/2 connections with the client preface ("PRI * HTTP/2.0").
    while (socket.input().empty()) {
      if (!(co_await socket.ReadMore()).ok()) {
        socket.Close();
        TaskEnded();
        co_return;
      }
    }
    if (TakesGrpc(socket)) {
      // A copy: the Connection (listed for Shutdown and /status until this
      // coroutine ends) keeps a socket to look at.
      ServeGrpc(conn->socket);
      TaskEnded();
      co_return;
    }
  }
  connections_.fetch_add(1, std::memory_order_relaxed);
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
            it->second->Cancel();
            conn->calls.erase(it);
          }
          break;
        }
        case FrameType::kMessage:
        case FrameType::kWindow: {
          // Frames of a call that ended cross in flight and are dropped, as
          // are stream frames sent to a unary method.
          auto it = conn->calls.find(frame.stream_id);
          if (it == conn->calls.end() || it->second->stream_ == nullptr) break;
          if (!internal::ApplyStreamFrame(*it->second->stream_, frame, &error)) {
            protocol_errors_.fetch_add(1, std::memory_order_relaxed);
            CAPSTAN_LOG(warn, "rpc protocol error, closing connection", "reason", error);
            open = false;
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
          // PONG and GOAWAY need nothing from a server.
          break;
      }
      if (!open) break;
    }
    if (!open) break;
    if (!(co_await socket.ReadMore()).ok()) break;
  }
  // Calls still running finish into the void.
  for (auto& [id, call] : conn->calls) call->Cancel();
  conn->calls.clear();
  socket.Close();
  connections_.fetch_sub(1, std::memory_order_relaxed);
  TaskEnded();
}

void Server::Reject(const std::shared_ptr<ServerCall::Connection>& conn, uint32_t stream_id,
                    absl::StatusCode code, std::string_view message) {
  Meta meta;
  meta.status_code = static_cast<uint32_t>(code);
  meta.status_message = message;
  AppendFrame(&conn->socket->output(), FrameType::kResponse, 0, stream_id, meta, net::Buffer());
  conn->socket->MarkWritten();
}

Server::LoopState* Server::StateOf(net::EventLoop* loop) {
  for (auto& state : loops_) {
    if (state->loop == loop) return state.get();
  }
  return nullptr;
}

absl::Status Server::Admit(LoopState* state, Method* m, bool deadline_passed,
                           mesh::AdaptiveConcurrencyLimiter** limiter) {
  *limiter = nullptr;
  if (state->draining && !m->serves_while_draining) {
    return absl::UnavailableError("server is shutting down (not processed; retry elsewhere)");
  }
  if (deadline_passed) {
    m->Handled(absl::StatusCode::kDeadlineExceeded)->Inc();
    return absl::DeadlineExceededError("deadline passed before the call started");
  }
  // Limits answer at once: a call over them is refused unprocessed, so the
  // client may send it to another instance instead of waiting here.
  auto shed = [&](std::string_view why) {
    m->shed->Inc();
    m->Handled(absl::StatusCode::kResourceExhausted)->Inc();
    calls_shed_.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(
        absl::StrCat(m->full_name, ": ", std::string(why), " (not processed; retry elsewhere)"));
  };
  if (m->max_concurrency > 0 && m->in_flight->Value() >= m->max_concurrency) {
    return shed(absl::StrCat("max_concurrency ", m->max_concurrency, " reached"));
  }
  mesh::AdaptiveConcurrencyLimiter* adaptive = state->limiters.empty() || m->handler->streaming()
                                                   ? nullptr
                                                   : state->limiters[m->index].get();
  if (adaptive != nullptr && !adaptive->TryAcquire()) {
    return shed(absl::StrCat("adaptive concurrency limit ", adaptive->limit(), " reached"));
  }
  *limiter = adaptive;
  return absl::OkStatus();
}

void Server::Launch(LoopState* state, std::unique_ptr<ServerCall> call, Method* m,
                    mesh::AdaptiveConcurrencyLimiter* limiter) {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  calls_started_.fetch_add(1, std::memory_order_relaxed);
  m->in_flight->Add(1);
  // Runs inline until the handler first waits: a handler that answers at
  // once has its response queued before the next frame is decoded.
  state->loop->StartOwned(RunCall(std::move(call), m, limiter));
  if (limiter != nullptr && limiter->limit() != state->published_limits[m->index]) {
    m->limit->Add(limiter->limit() - state->published_limits[m->index]);
    state->published_limits[m->index] = limiter->limit();
  }
}

void Server::HandleRequest(LoopState* state, const std::shared_ptr<ServerCall::Connection>& conn,
                           Frame& frame) {
  auto reject = [&](absl::StatusCode code, std::string_view message) {
    Reject(conn, frame.stream_id, code, message);
  };
  if (frame.stream_id == 0 || conn->calls.contains(frame.stream_id)) {
    reject(absl::StatusCode::kInvalidArgument, "stream id is 0 or already open");
    return;
  }
  auto method =
      methods_.find(absl::string_view(frame.meta.method.data(), frame.meta.method.size()));
  if (method == methods_.end()) {
    if (state->draining) {
      reject(absl::StatusCode::kUnavailable,
             "server is shutting down (not processed; retry elsewhere)");
      return;
    }
    reject(absl::StatusCode::kUnimplemented,
           absl::StrCat("unknown method '", std::string(frame.meta.method), "'"));
    return;
  }
  Method* m = method->second;
  mesh::AdaptiveConcurrencyLimiter* limiter = nullptr;
  if (absl::Status refused = Admit(state, m, frame.meta.timeout_us == 0, &limiter); !refused.ok()) {
    reject(refused.code(), std::string_view(refused.message().data(), refused.message().size()));
    return;
  }
  bool streaming = m->handler->streaming();
  auto call = std::unique_ptr<ServerCall>(new ServerCall());
  call->stream_id_ = frame.stream_id;
  call->connection_ = conn;
  call->request_ = std::move(frame.payload);
  call->request_has_message_ = frame.has_message() && streaming;
  if (streaming) {
    call->stream_ = std::make_unique<internal::StreamState>(state->loop);
    if (frame.end_stream()) call->stream_->CloseInbound();
  }
  ServerContext& ctx = call->context_;
  ctx.loop_ = state->loop;
  ctx.method_ = std::string(frame.meta.method);
  ctx.tls_ = tls_ != nullptr;
  ctx.peer_identity_ = conn->peer_identity;
  if (frame.meta.timeout_us > 0) {
    ctx.deadline_ = Clock::now() + std::chrono::microseconds(frame.meta.timeout_us);
  }
  for (const auto& [k, v] : frame.meta.entries) ctx.metadata_.emplace_back(k, v);
  conn->calls[frame.stream_id] = call.get();
  conn->max_stream_id = std::max(conn->max_stream_id, frame.stream_id);
  conn->calls_started++;
  Launch(state, std::move(call), m, limiter);
}

net::Task<void> Server::RunCall(std::unique_ptr<ServerCall> call, Method* method,
                                mesh::AdaptiveConcurrencyLimiter* limiter) {
  Clock::time_point start = Clock::now();
  ServerContext& context = call->context();
  size_t entered = 0;
  absl::Status refused;
  for (; entered < interceptors_.size() && refused.ok(); ++entered) {
    refused = interceptors_[entered]->Before(context);
  }
  if (refused.ok()) {
    co_await method->handler->Run(call.get());
  } else {
    call->Finish(refused, nullptr);
  }
  if (!call->finished()) {
    call->Finish(absl::UnknownError("handler ended without a response"), nullptr);
  }
  Clock::duration elapsed = Clock::now() - start;
  while (entered > 0) interceptors_[--entered]->After(context, call->code(), elapsed);
  if (limiter != nullptr) limiter->Release(elapsed);
  method->in_flight->Add(-1);
  method->Handled(call->code())->Inc();
  method->latency->Observe(std::chrono::duration<double>(elapsed).count());
  CallDone();
}

void Server::CallDone() {
  if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

void Server::TaskEnded() {
  if (tasks_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

Server::Stats Server::stats() const {
  Stats stats{connections_.load(),     in_flight_.load(),  calls_started_.load(),
              protocol_errors_.load(), calls_shed_.load(), tls_handshake_failures_.load()};
  if (grpc_ != nullptr) {
    net::GrpcServer::Stats grpc = grpc_->stats();
    stats.connections += static_cast<int64_t>(grpc.connections);
    stats.protocol_errors += static_cast<int64_t>(grpc.protocol_errors);
  }
  return stats;
}

void Server::Shutdown(Clock::duration grace) {
  if (shut_down_ || group_ == nullptr) return;
  shut_down_ = true;
  Clock::time_point deadline = Clock::now() + grace;
  draining_.store(true, std::memory_order_release);
  // The admin page reads the loops: it stops before they do.
  if (admin_) admin_->Stop();
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
  // gRPC clients hear GOAWAY; their calls get the same grace, then their
  // connections close (cancelling what still runs).
  ShutdownGrpc(deadline);
  // 2. Let the calls in flight finish.
  {
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait_until(lock, deadline, [this] { return in_flight_.load() == 0; });
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
        // Drained or cut short by the timer, the socket closes next.
        auto drained = co_await socket->Drained();
        (void)drained;
        socket->Close();
      }
      raw->connections.clear();
    }(state.get()));
  }
  if (own_group_ != nullptr) {
    // The loops stop; a handler that ignored cancellation is destroyed with
    // them.
    own_group_->Stop();
  } else {
    AwaitQuiescence();
  }
}

void Server::AwaitQuiescence() {
  // Every connection is closed: accept loops and readers end at once, and
  // each running call has been cancelled. A handler that ignores
  // cancellation holds this up: the loops are not ours to stop, and the
  // server may not go away while its coroutines still run on them.
  std::unique_lock<std::mutex> lock(drain_mu_);
  while (!drained_.wait_for(lock, std::chrono::seconds(5),
                            [this] { return in_flight_.load() == 0 && tasks_.load() == 0; })) {
    CAPSTAN_LOG(warn, "rpc server waiting for its handlers to return before it stops", "calls",
                in_flight_.load(), "connections", tasks_.load());
  }
  lock.unlock();
  // A barrier on each loop: whatever said it ended above has returned (it
  // ran on that loop), and the listeners and lists go on their loop.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    net::RunOn(raw->loop, [raw] {
      raw->listener.reset();
      raw->connections.clear();
    });
  }
}

}  // namespace capstan::rpc
