#include "net/grpc_server.h"

#include <nghttp2/nghttp2.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/logging.h"
#include "net/block_on.h"
#include "net/task.h"

namespace capstan::net {
namespace {

nghttp2_nv Field(std::string_view name, std::string_view value) {
  return nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                    const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                    name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
}

std::string_view AsView(const uint8_t* data, size_t len) {
  return std::string_view(reinterpret_cast<const char*>(data), len);
}

// "/pkg.Service/Method" -> {"pkg.Service", "Method"}.
std::pair<std::string_view, std::string_view> SplitPath(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  size_t slash = path.find('/');
  if (slash == std::string_view::npos) return {path, {}};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

// One HTTP/2 connection: an nghttp2 server session fed from the socket, and
// the calls (streams) it carries. Lives on its loop; owned by its Serve
// coroutine.
class GrpcConnection {
 public:
  GrpcConnection(GrpcServer* server, std::shared_ptr<Socket> socket)
      : server_(server), socket_(std::move(socket)) {}
  ~GrpcConnection() {
    if (session_ != nullptr) nghttp2_session_del(session_);
  }
  GrpcConnection(const GrpcConnection&) = delete;
  GrpcConnection& operator=(const GrpcConnection&) = delete;

  Socket* socket() const { return socket_.get(); }
  GrpcServer* server() const { return server_; }
  EventLoop* loop() const { return socket_->loop(); }

  bool Start();
  // Feeds the bytes received; false when the session failed (a protocol
  // error: nghttp2 has queued a GOAWAY saying why).
  bool Receive();
  // Hands every frame nghttp2 has ready to the socket.
  void Send();
  // Sends in this turn, after the current callbacks (replies written in one
  // turn leave together).
  void ScheduleSend() {
    if (!send_timer_.armed()) send_timer_.Arm(loop(), loop()->now());
  }
  bool WantsIo() const {
    return nghttp2_session_want_read(session_) != 0 || nghttp2_session_want_write(session_) != 0;
  }
  void GoAway() {
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                          nullptr, 0);
    Send();
  }
  // The connection is ending: every call still open is over.
  void CancelAll();

  // ---- for GrpcCall
  void SubmitHeaders(GrpcCall* call);
  // The call's status: as trailers after its messages, or as the whole
  // response (trailers-only) when it sent none.
  void SubmitStatus(GrpcCall* call, bool trailers_only);
  void ResumeData(GrpcCall* call) {
    call->data_deferred_ = false;
    nghttp2_session_resume_data(session_, call->stream_id_);
  }

 private:
  static nghttp2_session_callbacks* Callbacks();
  static GrpcConnection* Self(void* user) { return static_cast<GrpcConnection*>(user); }
  GrpcCall* CallOf(int32_t stream_id) {
    return static_cast<GrpcCall*>(nghttp2_session_get_stream_user_data(session_, stream_id));
  }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user);
  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t OnSend(nghttp2_session*, const uint8_t* data, size_t length, int flags,
                        void* user);
  static int OnSendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                        size_t length, nghttp2_data_source* source, void* user);
  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static ssize_t ReadData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user);

  void Dispatch(GrpcCall* call);
  void DeliverMessages(GrpcCall* call);
  void OnRequestEnd(GrpcCall* call);
  void EndCall(GrpcCall* call);
  // Ends a call the handler did not end (bad request, limits): the handler,
  // if any, sees it cancelled.
  void Fail(GrpcCall* call, const absl::Status& status) {
    call->cancelled_ = true;
    call->Finish(status);
  }

  GrpcServer* server_;
  std::shared_ptr<Socket> socket_;
  nghttp2_session* session_ = nullptr;
  absl::flat_hash_map<int32_t, GrpcCallPtr> calls_;
  Timer send_timer_{[this] { Send(); }};
  std::vector<std::weak_ptr<GrpcCall>> room_;
  bool in_send_ = false;
};

nghttp2_session_callbacks* GrpcConnection::Callbacks() {
  static nghttp2_session_callbacks* callbacks = [] {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cb, &OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &OnDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, &OnStreamClose);
    nghttp2_session_callbacks_set_send_callback(cb, &OnSend);
    nghttp2_session_callbacks_set_send_data_callback(cb, &OnSendData);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, &OnFrameSend);
    return cb;
  }();
  return callbacks;
}

bool GrpcConnection::Start() {
  // No HTTP messaging checks: gRPC clients send what gRPC servers accept, and
  // that is not always strict HTTP — etcd's client sends the endpoint URL
  // itself ("http://host:port") as :authority, which nghttp2 would reset.
  // Dispatch checks what gRPC needs (:method, :path, content-type).
  nghttp2_option* option;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_http_messaging(option, 1);
  int rv = nghttp2_session_server_new2(&session_, Callbacks(), this, option);
  nghttp2_option_del(option);
  if (rv != 0) return false;
  const GrpcServerOptions& o = server_->options_;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(o.stream_window_bytes)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(o.max_metadata_bytes)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, o.connection_window_bytes);
  Send();
  return true;
}

bool GrpcConnection::Receive() {
  Buffer& input = socket_->input();
  for (size_t i = 0; i < input.slice_count(); ++i) {
    std::string_view bytes = input.slice(i);
    ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size());
    if (rv < 0) {
      server_->protocol_errors_.fetch_add(1, std::memory_order_relaxed);
      CAPSTAN_LOG(warn, "grpc: HTTP/2 protocol error, closing the connection", "reason",
                  nghttp2_strerror(static_cast<int>(rv)));
      input.Clear();
      return false;
    }
  }
  input.Clear();
  return true;
}

void GrpcConnection::Send() {
  if (in_send_ || session_ == nullptr) return;
  in_send_ = true;
  int rv = nghttp2_session_send(session_);
  in_send_ = false;
  if (rv != 0) {
    CAPSTAN_LOG(warn, "grpc: HTTP/2 send failed, closing the connection", "reason",
                nghttp2_strerror(rv));
    socket_->Close();
    return;
  }
  if (room_.empty()) return;
  std::vector<std::weak_ptr<GrpcCall>> room;
  room.swap(room_);
  for (auto& weak : room) {
    GrpcCallPtr call = weak.lock();
    if (call && !call->done_ && call->handler_) call->handler_->OnWriteRoom();
  }
}

void GrpcConnection::CancelAll() {
  std::vector<GrpcCallPtr> open;
  open.reserve(calls_.size());
  for (auto& [id, call] : calls_) open.push_back(call);
  for (auto& call : open) {
    if (!call->finishing_) call->cancelled_ = true;
    EndCall(call.get());
  }
}

void GrpcConnection::SubmitHeaders(GrpcCall* call) {
  nghttp2_nv fields[] = {Field(":status", "200"), Field("content-type", "application/grpc")};
  nghttp2_data_provider data;
  data.source.ptr = call;
  data.read_callback = &ReadData;
  nghttp2_submit_response(session_, call->stream_id_, fields, std::size(fields), &data);
}

void GrpcConnection::SubmitStatus(GrpcCall* call, bool trailers_only) {
  std::string code = absl::StrCat(static_cast<int>(call->status_.code()));
  std::string message = PercentEncodeGrpcMessage(
      std::string_view(call->status_.message().data(), call->status_.message().size()));
  // Every reply ends here: fields on the stack, not the heap.
  nghttp2_nv fields[4];
  size_t n = 0;
  if (trailers_only) {
    fields[n++] = Field(":status", "200");
    fields[n++] = Field("content-type", "application/grpc");
  }
  fields[n++] = Field("grpc-status", code);
  if (!message.empty()) fields[n++] = Field("grpc-message", message);
  if (trailers_only) {
    nghttp2_submit_response(session_, call->stream_id_, fields, n, nullptr);
  } else {
    nghttp2_submit_trailer(session_, call->stream_id_, fields, n);
  }
}

int GrpcConnection::OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  GrpcConnection* self = Self(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  int32_t id = frame->hd.stream_id;
  GrpcCallPtr call(new GrpcCall(self, self->loop(), id));
  nghttp2_session_set_stream_user_data(self->session_, id, call.get());
  self->calls_.emplace(id, std::move(call));
  self->server_->calls_active_.fetch_add(1, std::memory_order_relaxed);
  self->server_->calls_started_.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

int GrpcConnection::OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                             size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                             void* user) {
  GrpcConnection* self = Self(user);
  GrpcCall* call = self->CallOf(frame->hd.stream_id);
  // Trailers from a client carry nothing gRPC defines: ignored.
  if (call == nullptr || call->dispatched_) return 0;
  call->metadata_bytes_ += namelen + valuelen + 32;  // HPACK's accounting
  if (call->metadata_bytes_ > self->server_->options_.max_metadata_bytes) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
  }
  std::string_view n = AsView(name, namelen);
  std::string_view v = AsView(value, valuelen);
  if (n == ":path") {
    auto it = self->server_->methods_.find(absl::string_view(v.data(), v.size()));
    if (it != self->server_->methods_.end()) {
      call->route_ = &*it;
    } else {
      call->path_ = v;  // kept only to name the unknown method in the error
    }
  } else if (n == ":method") {
    call->http_method_ = v;
  } else if (n == "content-type") {
    call->grpc_content_type_ = v.starts_with("application/grpc");
  } else if (n == "grpc-timeout") {
    call->timeout_ = v;
  } else if (n.empty() || n.front() == ':' || n == "te") {
    // Other pseudo-headers (nghttp2 has checked them) and transport fields.
  } else {
    call->metadata_.Add(n, v);
  }
  return 0;
}

int GrpcConnection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  GrpcConnection* self = Self(user);
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  GrpcCall* call = self->CallOf(frame->hd.stream_id);
  if (call == nullptr) return 0;
  // Keep the call alive through handlers that may end it.
  GrpcCallPtr hold = call->shared_from_this();
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    self->Dispatch(call);
  }
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) self->OnRequestEnd(call);
  return 0;
}

void GrpcConnection::Dispatch(GrpcCall* call) {
  call->dispatched_ = true;
  if (call->http_method_ != "POST" || !call->grpc_content_type_) {
    // Not a gRPC request: the HTTP answer the gRPC spec asks for.
    call->finishing_ = true;
    call->headers_sent_ = true;
    const char* status = call->http_method_ != "POST" ? "405" : "415";
    nghttp2_nv fields[] = {Field(":status", status)};
    nghttp2_submit_response(session_, call->stream_id_, fields, 1, nullptr);
    ScheduleSend();
    return;
  }
  const GrpcServerOptions& o = server_->options_;
  call->reader_ = std::make_unique<GrpcMessageReader>(o.max_receive_message_bytes);
  if (!call->timeout_.empty()) {
    std::optional<std::chrono::nanoseconds> timeout = ParseGrpcTimeout(call->timeout_);
    if (!timeout) {
      Fail(call, absl::InternalError(absl::StrCat("malformed grpc-timeout: ", call->timeout_)));
      return;
    }
    std::weak_ptr<GrpcCall> weak = call->weak_from_this();
    call->deadline_ = std::make_unique<Timer>([weak] {
      GrpcCallPtr c = weak.lock();
      if (c == nullptr || c->finishing_ || c->done_) return;
      c->cancelled_ = true;
      c->Finish(absl::DeadlineExceededError("context deadline exceeded"));
    });
    call->deadline_->ArmAfter(loop(), *timeout);
  }
  if (call->route_ != nullptr && call->route_->second.unary) {
    call->unary_ = &call->route_->second.unary;
    return;
  }
  const GrpcStreamFactory* factory = nullptr;
  if (call->route_ != nullptr) {
    factory = &call->route_->second.stream;
  } else if (server_->fallback_) {
    factory = &server_->fallback_;
  }
  if (factory == nullptr) {
    auto [service_view, method_view] = SplitPath(call->method());
    std::string service(service_view), method(method_view);
    Fail(call, absl::UnimplementedError(
                   server_->services_.contains(service)
                       ? absl::StrCat("unknown method ", method, " for service ", service)
                       : absl::StrCat("unknown service ", service)));
    return;
  }
  call->handler_ = (*factory)(call->shared_from_this());
  if (call->handler_ == nullptr && !call->finishing_) {
    Fail(call, absl::InternalError("grpc: no handler for the call"));
  }
}

int GrpcConnection::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                                size_t len, void* user) {
  GrpcConnection* self = Self(user);
  GrpcCall* call = self->CallOf(stream_id);
  if (call == nullptr || call->finishing_ || call->reader_ == nullptr) return 0;
  GrpcCallPtr hold = call->shared_from_this();
  call->reader_->Append(AsView(data, len));
  self->DeliverMessages(call);
  return 0;
}

void GrpcConnection::DeliverMessages(GrpcCall* call) {
  while (!call->finishing_) {
    absl::StatusOr<std::optional<Buffer>> next = call->reader_->Next();
    if (!next.ok()) {
      Fail(call, next.status());
      return;
    }
    if (!next->has_value()) return;
    if (call->unary_ != nullptr) {
      if (++call->unary_messages_ == 1) call->unary_request_ = std::move(**next);
    } else {
      call->handler_->OnMessage(std::move(**next));
    }
  }
}

void GrpcConnection::OnRequestEnd(GrpcCall* call) {
  if (call->finishing_) return;
  if (call->reader_->pending_bytes() > 0) {
    Fail(call, absl::InternalError("grpc: the request ended inside a message"));
    return;
  }
  if (call->unary_ != nullptr) {
    if (call->unary_messages_ != 1) {
      Fail(call, absl::InternalError(absl::StrCat(
                     "grpc: a unary call takes one request message, got ", call->unary_messages_)));
      return;
    }
    Buffer request = std::move(*call->unary_request_);
    call->unary_request_.reset();
    (*call->unary_)(call->shared_from_this(), std::move(request));
    return;
  }
  call->handler_->OnHalfClose();
}

int GrpcConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t, void* user) {
  GrpcConnection* self = Self(user);
  GrpcCall* call = self->CallOf(stream_id);
  if (call == nullptr) return 0;
  if (!call->finishing_) call->cancelled_ = true;
  self->EndCall(call);
  return 0;
}

void GrpcConnection::EndCall(GrpcCall* call) {
  auto it = calls_.find(call->stream_id_);
  if (it == calls_.end()) return;
  GrpcCallPtr hold = std::move(it->second);
  calls_.erase(it);
  if (session_ != nullptr)
    nghttp2_session_set_stream_user_data(session_, call->stream_id_, nullptr);
  call->done_ = true;
  call->conn_ = nullptr;
  call->deadline_.reset();
  call->out_.Clear();
  if (std::unique_ptr<GrpcStreamHandler> handler = std::move(call->handler_)) {
    handler->OnDone(call->cancelled_);
  }
  server_->OnCallEnded();
}

ssize_t GrpcConnection::OnSend(nghttp2_session*, const uint8_t* data, size_t length, int,
                               void* user) {
  Self(user)->socket_->Write(AsView(data, length));
  return static_cast<ssize_t>(length);
}

ssize_t GrpcConnection::ReadData(nghttp2_session*, int32_t, uint8_t*, size_t length,
                                 uint32_t* data_flags, nghttp2_data_source* source, void* user) {
  GrpcConnection* self = Self(user);
  auto* call = static_cast<GrpcCall*>(source->ptr);
  size_t available = call->out_.size();
  if (available == 0 && !call->finishing_) {
    call->data_deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = std::min(length, available);
  if (n > 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == available && call->finishing_) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    self->SubmitStatus(call, /*trailers_only=*/false);
  }
  return static_cast<ssize_t>(n);
}

int GrpcConnection::OnSendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                               size_t length, nghttp2_data_source* source, void* user) {
  GrpcConnection* self = Self(user);
  auto* call = static_cast<GrpcCall*>(source->ptr);
  self->socket_->Write(AsView(framehd, 9));
  self->socket_->Write(call->out_.Cut(length));
  (void)frame;  // no padding: we install no padding callback
  size_t low_water = self->server_->options_.stream_high_water_bytes / 4;
  if (call->wants_room_ && call->out_.size() <= low_water) {
    call->wants_room_ = false;
    self->room_.push_back(call->weak_from_this());
  }
  return 0;
}

int GrpcConnection::OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  (void)user;
  // The response is complete while the client may still be sending: tell it
  // to stop without error (RFC 9113 §8.1), as gRPC servers do.
  if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
      nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

// ---- GrpcCall

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
  if (finishing_ || done_ || conn_ == nullptr) return false;
  out_.Append(std::move(framed));
  if (!headers_sent_) {
    headers_sent_ = true;
    conn_->SubmitHeaders(this);
  } else if (data_deferred_) {
    conn_->ResumeData(this);
  }
  conn_->ScheduleSend();
  if (handler_ != nullptr && out_.size() >= conn_->server()->options_.stream_high_water_bytes) {
    wants_room_ = true;
    return false;
  }
  return true;
}

void GrpcCall::Finish(const absl::Status& status) {
  if (finishing_ || done_) return;
  finishing_ = true;
  status_ = status;
  if (conn_ == nullptr) return;
  if (!headers_sent_) {
    headers_sent_ = true;
    conn_->SubmitStatus(this, /*trailers_only=*/true);
  } else if (data_deferred_) {
    conn_->ResumeData(this);
  }
  conn_->ScheduleSend();
}

void GrpcCall::FinishFromAnyThread(GrpcCallPtr call, absl::Status status,
                                   std::optional<Buffer> framed) {
  auto finish = [](GrpcCall* c, absl::Status st, std::optional<Buffer> framed) {
    if (st.ok() && framed.has_value()) c->WriteFramed(std::move(*framed));
    c->Finish(st);
  };
  if (call->loop_->InLoopThread()) {
    finish(call.get(), std::move(status), std::move(framed));
    return;
  }
  EventLoop* loop = call->loop_;
  loop->Post([call = std::move(call), status = std::move(status), framed = std::move(framed),
              finish]() mutable { finish(call.get(), std::move(status), std::move(framed)); });
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

absl::StatusOr<int> GrpcServer::Listen(LoopGroup* group, const std::string& host, int port) {
  if (loops_.empty()) {
    for (int i = 0; i < group->size(); ++i) {
      auto state = std::make_unique<LoopState>();
      state->loop = group->loop(i);
      loops_.push_back(std::move(state));
    }
  }
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
      raw->loop->StartOwned(AcceptLoop(raw, raw->listeners.back().get()));
    });
    if (!st.ok()) return st;
  }
  return port;
}

Task<void> GrpcServer::AcceptLoop(LoopState* state, Listener* listener) {
  while (true) {
    auto accepted = co_await listener->Accept();
    if (!accepted.ok()) break;  // the listener closed
    auto conn = std::make_shared<GrpcConnection>(this, std::move(accepted).value());
    std::erase_if(state->connections, [](const auto& weak) { return weak.expired(); });
    state->connections.push_back(conn);
    tasks_.fetch_add(1);
    state->loop->StartOwned(ServeConnection(std::move(conn)));
  }
  TaskEnded();
}

Task<void> GrpcServer::ServeConnection(std::shared_ptr<GrpcConnection> conn) {
  connections_.fetch_add(1, std::memory_order_relaxed);
  Socket* socket = conn->socket();
  if (conn->Start()) {
    while (true) {
      absl::Status st = co_await socket->ReadMore();
      if (!st.ok()) break;
      bool ok = conn->Receive();
      conn->Send();
      if (!ok || !conn->WantsIo()) break;
    }
  }
  conn->CancelAll();
  // The last frames (replies, a GOAWAY saying why) leave, within a bound.
  Timer give_up([socket] { socket->Close(); });
  give_up.ArmAfter(conn->loop(), std::chrono::seconds(1));
  // Drained or cut short by the timer, the socket closes next.
  auto drained = co_await socket->Drained();
  (void)drained;
  socket->Close();
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
               protocol_errors_.load()};
}

}  // namespace capstan::net
