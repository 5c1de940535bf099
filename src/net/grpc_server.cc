#include "net/grpc_server.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/logging.h"
#include "net/block_on.h"
#include "net/task.h"

namespace capstan::net {
namespace {

// "/pkg.Service/Method" -> {"pkg.Service", "Method"}.
std::pair<std::string_view, std::string_view> SplitPath(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  size_t slash = path.find('/');
  if (slash == std::string_view::npos) return {path, {}};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

// One HTTP/2 connection carrying gRPC calls: the server side of an
// Http2Session whose streams are GrpcCalls. Lives on its loop; owned by its
// Serve coroutine.
class GrpcConnection : public Http2Session {
 public:
  GrpcConnection(GrpcServer* server, std::shared_ptr<Socket> socket)
      : Http2Session(Role::kServer, std::move(socket), SessionOptions(server->options_)),
        server_(server) {}

 private:
  static Http2Options SessionOptions(const GrpcServerOptions& o) {
    Http2Options h;
    h.max_concurrent_streams = o.max_concurrent_streams;
    h.stream_window_bytes = o.stream_window_bytes;
    h.connection_window_bytes = o.connection_window_bytes;
    h.max_header_list_bytes = static_cast<uint32_t>(o.max_metadata_bytes);
    // gRPC clients send what gRPC servers accept, and that is not always
    // strict HTTP (etcd's client sends "http://host:port" as :authority,
    // which nghttp2 would reset). Dispatch checks what gRPC needs.
    h.http_messaging = false;
    h.stream_high_water_bytes = o.stream_high_water_bytes;
    h.ping_ack_delay = o.ping_ack_delay;
    return h;
  }

  std::shared_ptr<Http2Stream> NewStream(int32_t) override {
    server_->calls_active_.fetch_add(1, std::memory_order_relaxed);
    server_->calls_started_.fetch_add(1, std::memory_order_relaxed);
    GrpcCallPtr call(new GrpcCall(server_, loop()));
    // A stream's HEADERS were decrypted, so the handshake is done and the
    // peer's certificate (if any) is known: read it once per connection.
    if (socket()->tls() != nullptr) {
      if (peer_identity_ == nullptr) {
        peer_identity_ = std::make_shared<const TlsPeerIdentity>(socket()->tls()->PeerIdentity());
      }
      call->peer_identity_ = peer_identity_;
    }
    return call;
  }
  void OnProtocolError() override {
    server_->protocol_errors_.fetch_add(1, std::memory_order_relaxed);
  }

  GrpcServer* server_;
  std::shared_ptr<const TlsPeerIdentity> peer_identity_;
};

// ---- GrpcCall

const TlsPeerIdentity& GrpcCall::peer_identity() const {
  static const TlsPeerIdentity kNone;
  return peer_identity_ != nullptr ? *peer_identity_ : kNone;
}

GrpcCall::~GrpcCall() = default;

void GrpcMetadata::Add(std::string_view name, std::string_view value) {
  if (blob_.empty()) blob_.reserve(256);
  PutFixed32LE(&blob_, static_cast<uint32_t>(name.size()));
  PutFixed32LE(&blob_, static_cast<uint32_t>(value.size()));
  blob_.append(name);
  blob_.append(value);
}

GrpcMetadata::Field GrpcMetadata::Iterator::operator*() const {
  const char* p = blob_->data() + pos_;
  uint32_t name_len = DecodeFixed32LE(p), value_len = DecodeFixed32LE(p + 4);
  return {std::string_view(p + 8, name_len), std::string_view(p + 8 + name_len, value_len)};
}

GrpcMetadata::Iterator& GrpcMetadata::Iterator::operator++() {
  const char* p = blob_->data() + pos_;
  pos_ += 8 + DecodeFixed32LE(p) + DecodeFixed32LE(p + 4);
  return *this;
}

std::optional<std::string_view> GrpcMetadata::Find(std::string_view name) const {
  for (const auto& [n, v] : *this) {
    if (n == name) return v;
  }
  return std::nullopt;
}

bool GrpcCall::OnHeader(HeadersKind kind, std::string_view n, std::string_view v) {
  // Trailers from a client carry nothing gRPC defines: ignored.
  if (kind != HeadersKind::kRequest || dispatched_) return true;
  metadata_bytes_ += n.size() + v.size() + 32;                               // HPACK's accounting
  if (metadata_bytes_ > server_->options_.max_metadata_bytes) return false;  // resets the stream
  if (n == ":path") {
    auto it = server_->methods_.find(absl::string_view(v.data(), v.size()));
    if (it != server_->methods_.end()) {
      route_ = &*it;
    } else {
      path_ = v;  // kept only to name the unknown method in the error
    }
  } else if (n == ":method") {
    http_method_ = v;
  } else if (n == "content-type") {
    grpc_content_type_ = v.starts_with("application/grpc");
  } else if (n == "grpc-timeout") {
    timeout_ = v;
  } else if (n.empty() || n.front() == ':' || n == "te") {
    // Other pseudo-headers and transport fields.
  } else {
    metadata_.Add(n, v);
  }
  return true;
}

void GrpcCall::OnHeaders(HeadersKind kind, bool) {
  if (kind == HeadersKind::kRequest) Dispatch();
}

void GrpcCall::Dispatch() {
  dispatched_ = true;
  if (http_method_ != "POST" || !grpc_content_type_) {
    // Not a gRPC request: the HTTP answer the gRPC spec asks for.
    finishing_ = true;
    HeaderField fields[] = {{":status", http_method_ != "POST" ? "405" : "415"}};
    SendHeaders(fields, /*end_stream=*/true);
    return;
  }
  const GrpcServerOptions& o = server_->options_;
  reader_ = std::make_unique<GrpcMessageReader>(o.max_receive_message_bytes);
  if (!timeout_.empty()) {
    std::optional<std::chrono::nanoseconds> timeout = ParseGrpcTimeout(timeout_);
    if (!timeout) {
      Fail(absl::InternalError(absl::StrCat("malformed grpc-timeout: ", timeout_)));
      return;
    }
    std::weak_ptr<Http2Stream> weak = weak_from_this();
    deadline_ = std::make_unique<Timer>([weak] {
      std::shared_ptr<Http2Stream> stream = weak.lock();
      if (stream == nullptr) return;
      auto* c = static_cast<GrpcCall*>(stream.get());
      if (c->finishing_ || c->done_) return;
      c->cancelled_ = true;
      c->Finish(absl::DeadlineExceededError("context deadline exceeded"));
    });
    deadline_->ArmAfter(loop_, *timeout);
    deadline_at_ = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(*timeout);
  }
  if (route_ != nullptr && route_->second.unary) {
    unary_ = &route_->second.unary;
    return;
  }
  const GrpcStreamFactory* factory = nullptr;
  if (route_ != nullptr) {
    factory = &route_->second.stream;
  } else if (server_->fallback_) {
    factory = &server_->fallback_;
  }
  if (factory == nullptr) {
    auto [service_view, method_view] = SplitPath(method());
    std::string service(service_view), method_name(method_view);
    Fail(absl::UnimplementedError(
        server_->services_.contains(service)
            ? absl::StrCat("unknown method ", method_name, " for service ", service)
            : absl::StrCat("unknown service ", service)));
    return;
  }
  handler_ = (*factory)(self());
  if (handler_ == nullptr && !finishing_) {
    Fail(absl::InternalError("grpc: no handler for the call"));
  }
}

void GrpcCall::OnData(std::string_view bytes) {
  if (finishing_ || reader_ == nullptr) return;
  reader_->Append(bytes);
  DeliverMessages();
}

void GrpcCall::DeliverMessages() {
  while (!finishing_) {
    absl::StatusOr<std::optional<Buffer>> next = reader_->Next();
    if (!next.ok()) {
      Fail(next.status());
      return;
    }
    if (!next->has_value()) return;
    if (unary_ != nullptr) {
      if (++unary_messages_ == 1) unary_request_ = std::move(**next);
    } else {
      handler_->OnMessage(std::move(**next));
    }
  }
}

void GrpcCall::OnEndStream() {
  if (finishing_) return;
  if (reader_->pending_bytes() > 0) {
    Fail(absl::InternalError("grpc: the request ended inside a message"));
    return;
  }
  if (unary_ != nullptr) {
    if (unary_messages_ != 1) {
      Fail(absl::InternalError(
          absl::StrCat("grpc: a unary call takes one request message, got ", unary_messages_)));
      return;
    }
    Buffer request = std::move(*unary_request_);
    unary_request_.reset();
    (*unary_)(self(), std::move(request));
    return;
  }
  handler_->OnHalfClose();
}

void GrpcCall::OnWriteRoom() {
  if (!done_ && handler_ != nullptr) handler_->OnWriteRoom();
}

void GrpcCall::OnClose(uint32_t) {
  if (!finishing_) cancelled_ = true;
  done_ = true;
  deadline_.reset();
  if (std::unique_ptr<GrpcStreamHandler> handler = std::move(handler_)) {
    handler->OnDone(cancelled_);
  }
  server_->OnCallEnded();
}

// The call's status after its messages. (Trailers-only answers go in
// Finish, as the whole response.)
void GrpcCall::OnSendTrailers() {
  std::string code = absl::StrCat(static_cast<int>(status_.code()));
  std::string message = PercentEncodeGrpcMessage(
      std::string_view(status_.message().data(), status_.message().size()));
  HeaderField fields[2] = {{"grpc-status", code}, {"grpc-message", message}};
  std::span<const HeaderField> status_fields(fields, message.empty() ? 1 : 2);
  if (extra_trailers_.empty()) {
    SubmitTrailers(status_fields);
    return;
  }
  std::vector<HeaderField> all(status_fields.begin(), status_fields.end());
  for (const auto& [name, value] : extra_trailers_) all.push_back({name, value});
  SubmitTrailers(all);
}

void GrpcCall::AddTrailer(std::string_view name, std::string_view value) {
  if (finishing_ || done_) return;
  extra_trailers_.emplace_back(std::string(name), std::string(value));
}

bool GrpcCall::Write(Buffer message) {
  // Small messages are copied behind their prefix (one block); large ones
  // keep their blocks and get a prefix block of their own.
  if (message.size() <= 4096) {
    return WriteFramed(
        FrameGrpcMessage(message.size(), [&](char* out) { message.CopyTo(out, message.size()); }));
  }
  Buffer framed;
  AppendGrpcMessagePrefix(&framed, message.size());
  framed.Append(std::move(message));
  return WriteFramed(std::move(framed));
}

bool GrpcCall::WriteFramed(Buffer framed) {
  if (finishing_ || done_ || session() == nullptr) return false;
  if (!headers_sent()) {
    HeaderField fields[] = {{":status", "200"}, {"content-type", "application/grpc"}};
    SendHeaders(fields, /*end_stream=*/false);
  }
  bool room = Http2Stream::Write(std::move(framed));
  // Unary handlers write once and never wait for room.
  return room || handler_ == nullptr;
}

void GrpcCall::Finish(const absl::Status& status) {
  if (finishing_ || done_) return;
  finishing_ = true;
  status_ = status;
  if (session() == nullptr) return;
  if (headers_sent()) {
    End(/*trailers=*/true);
    return;
  }
  // Trailers-only: the status is the whole response.
  std::string code = absl::StrCat(static_cast<int>(status_.code()));
  std::string message = PercentEncodeGrpcMessage(
      std::string_view(status_.message().data(), status_.message().size()));
  HeaderField fields[4] = {{":status", "200"},
                           {"content-type", "application/grpc"},
                           {"grpc-status", code},
                           {"grpc-message", message}};
  std::span<const HeaderField> status_fields(fields, message.empty() ? 3 : 4);
  if (extra_trailers_.empty()) {
    SendHeaders(status_fields, /*end_stream=*/true);
    return;
  }
  std::vector<HeaderField> all(status_fields.begin(), status_fields.end());
  for (const auto& [name, value] : extra_trailers_) all.push_back({name, value});
  SendHeaders(all, /*end_stream=*/true);
}

namespace {

struct HeldAnswer {
  GrpcCallPtr call;
  absl::Status status;
  std::optional<Buffer> framed;
};

// This thread's open GrpcFinishBatch: how deep, and the answers it holds by
// loop (a handful of loops, so a vector).
struct FinishBatchState {
  int depth = 0;
  std::vector<std::pair<EventLoop*, std::vector<HeldAnswer>>> by_loop;
};

FinishBatchState& ThreadFinishBatch() {
  thread_local FinishBatchState state;
  return state;
}

void FinishOnLoop(GrpcCall* call, absl::Status status, std::optional<Buffer> framed) {
  if (status.ok() && framed.has_value()) call->WriteFramed(std::move(*framed));
  call->Finish(status);
}

}  // namespace

void GrpcCall::FinishFromAnyThread(GrpcCallPtr call, absl::Status status,
                                   std::optional<Buffer> framed) {
  if (call->loop_->InLoopThread()) {
    FinishOnLoop(call.get(), std::move(status), std::move(framed));
    return;
  }
  EventLoop* loop = call->loop_;
  if (FinishBatchState& batch = ThreadFinishBatch(); batch.depth > 0) {
    auto it = std::find_if(batch.by_loop.begin(), batch.by_loop.end(),
                           [loop](const auto& entry) { return entry.first == loop; });
    if (it == batch.by_loop.end()) {
      batch.by_loop.emplace_back(loop, std::vector<HeldAnswer>());
      it = batch.by_loop.end() - 1;
    }
    it->second.push_back(HeldAnswer{std::move(call), std::move(status), std::move(framed)});
    return;
  }
  loop->Post(
      [call = std::move(call), status = std::move(status), framed = std::move(framed)]() mutable {
        FinishOnLoop(call.get(), std::move(status), std::move(framed));
      });
}

GrpcFinishBatch::GrpcFinishBatch() { ++ThreadFinishBatch().depth; }

GrpcFinishBatch::~GrpcFinishBatch() {
  FinishBatchState& batch = ThreadFinishBatch();
  if (--batch.depth > 0 || batch.by_loop.empty()) return;
  std::vector<std::pair<EventLoop*, std::vector<HeldAnswer>>> by_loop;
  by_loop.swap(batch.by_loop);
  for (auto& [loop, answers] : by_loop) {
    loop->Post([answers = std::move(answers)]() mutable {
      for (HeldAnswer& a : answers) {
        FinishOnLoop(a.call.get(), std::move(a.status), std::move(a.framed));
      }
    });
  }
}

// ---- GrpcServer

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::AddUnary(std::string path, GrpcUnaryHandler handler) {
  services_.emplace(std::string(SplitPath(path).first));
  methods_[std::move(path)].unary = std::move(handler);
}

void GrpcServer::AddStream(std::string path, GrpcStreamFactory factory) {
  services_.emplace(std::string(SplitPath(path).first));
  methods_[std::move(path)].stream = std::move(factory);
}

void GrpcServer::WrapMethods(
    const std::function<GrpcUnaryHandler(const std::string& path, GrpcUnaryHandler)>& unary,
    const std::function<GrpcStreamFactory(const std::string& path, GrpcStreamFactory)>& stream) {
  for (auto& [path, method] : methods_) {
    if (method.unary) method.unary = unary(path, std::move(method.unary));
    if (method.stream) method.stream = stream(path, std::move(method.stream));
  }
}

void GrpcServer::Attach(LoopGroup* group) {
  if (!loops_.empty()) return;
  for (int i = 0; i < group->size(); ++i) {
    auto state = std::make_unique<LoopState>();
    state->loop = group->loop(i);
    loops_.push_back(std::move(state));
  }
}

void GrpcServer::Serve(std::shared_ptr<Socket> socket) {
  for (auto& state : loops_) {
    if (state->loop == socket->loop()) {
      ServeAccepted(state.get(), std::move(socket));
      return;
    }
  }
  socket->Close();  // not one of our loops: a caller's bug, but no leak
}

absl::StatusOr<int> GrpcServer::Listen(LoopGroup* group, const std::string& host, int port,
                                       TlsContextSource tls) {
  Attach(group);
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    absl::Status st;
    RunOn(raw->loop, [&] {
      auto listener = Listener::Bind(raw->loop, host, port, /*reuse_port=*/true);
      if (!listener.ok()) {
        st = listener.status();
        return;
      }
      port = (*listener)->port();
      raw->listeners.push_back(std::move(listener).value());
      tasks_.fetch_add(1);
      raw->loop->StartOwned(AcceptLoop(raw, raw->listeners.back().get(), tls));
    });
    if (!st.ok()) return st;
  }
  return port;
}

Task<void> GrpcServer::AcceptLoop(LoopState* state, Listener* listener, TlsContextSource tls) {
  while (true) {
    auto accepted = co_await listener->Accept();
    if (!accepted.ok()) break;  // the listener closed
    if (tls != nullptr) {
      std::shared_ptr<const TlsContext> context = tls();
      absl::Status st = context == nullptr
                            ? absl::UnavailableError("no TLS context")
                            : (*accepted)->StartTls(std::move(context), TlsRole::kServer);
      if (!st.ok()) {
        tls_refused_.fetch_add(1, std::memory_order_relaxed);
        CAPSTAN_LOG(warn, "grpc server: TLS did not start", "error", std::string(st.message()));
        (*accepted)->Close();
        continue;
      }
    }
    ServeAccepted(state, std::move(accepted).value());
  }
  TaskEnded();
}

void GrpcServer::ServeAccepted(LoopState* state, std::shared_ptr<Socket> socket) {
  if (state->closed) {
    socket->Close();
    return;
  }
  auto conn = std::make_shared<GrpcConnection>(this, std::move(socket));
  std::erase_if(state->connections, [](const auto& weak) { return weak.expired(); });
  state->connections.push_back(conn);
  tasks_.fetch_add(1);
  state->loop->StartOwned(ServeConnection(std::move(conn)));
}

Task<void> GrpcServer::ServeConnection(std::shared_ptr<GrpcConnection> conn) {
  connections_.fetch_add(1, std::memory_order_relaxed);
  if (conn->Start()) {
    co_await conn->Run();
  } else {
    conn->socket()->Close();
  }
  connections_.fetch_sub(1, std::memory_order_relaxed);
  conn.reset();
  TaskEnded();
}

void GrpcServer::TaskEnded() {
  if (tasks_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

void GrpcServer::OnCallEnded() {
  if (calls_active_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    drained_.notify_all();
  }
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  // 1. No new connections or calls: listeners close, clients hear GOAWAY.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    RunOn(raw->loop, [raw] {
      raw->closed = true;
      for (auto& listener : raw->listeners) listener->Close();
      for (auto& weak : raw->connections) {
        if (auto conn = weak.lock()) conn->GoAway();
      }
    });
  }
  // 2. Calls in flight get the grace period.
  {
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait_until(lock, std::chrono::steady_clock::now() + grace,
                        [this] { return calls_active_.load() == 0; });
  }
  if (calls_active_.load() > 0) {
    CAPSTAN_LOG(warn, "grpc server stopping with calls still open", "calls", calls_active_.load());
  }
  // 3. Every connection closes; their coroutines end (each cancels the calls
  // it still carries) before the server may go away.
  for (auto& state : loops_) {
    LoopState* raw = state.get();
    RunOn(raw->loop, [raw] {
      for (auto& weak : raw->connections) {
        if (auto conn = weak.lock()) conn->socket()->Close();
      }
    });
  }
  std::unique_lock<std::mutex> lock(drain_mu_);
  drained_.wait(lock, [this] { return tasks_.load() == 0; });
}

GrpcServer::Stats GrpcServer::stats() const {
  return Stats{connections_.load(), calls_active_.load(), calls_started_.load(),
               protocol_errors_.load(), tls_refused_.load()};
}

}  // namespace capstan::net
