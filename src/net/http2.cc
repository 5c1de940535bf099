#include "net/http2.h"

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace capstan::net {
namespace {

std::string_view AsView(const uint8_t* data, size_t len) {
  return std::string_view(reinterpret_cast<const char*>(data), len);
}

// Fields as nghttp2 takes them, on the stack for the usual few.
using NvArray = absl::InlinedVector<nghttp2_nv, 16>;

NvArray ToNv(std::span<const HeaderField> fields) {
  NvArray nv;
  nv.reserve(fields.size());
  for (const HeaderField& f : fields) {
    nv.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(f.name.data())),
                            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(f.value.data())),
                            f.name.size(), f.value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

}  // namespace

// ---- Http2Stream

// What a stream may always hold, whatever the connection's total
// (Http2Options::connection_high_water_bytes).
constexpr size_t kConnectionShareFloor = 16 << 10;

void Http2Stream::SendHeaders(std::span<const HeaderField> fields, bool end_stream) {
  if (session_ == nullptr || headers_sent_) return;
  headers_sent_ = true;
  if (end_stream) ending_ = true;
  session_->SubmitResponse(this, fields, end_stream);
  session_->ScheduleSend();
}

bool Http2Stream::Write(Buffer data) {
  if (session_ == nullptr || ending_) return false;
  session_->buffered_total_ += data.size();
  out_.Append(std::move(data));
  if (data_deferred_) session_->ResumeData(this);
  session_->ScheduleSend();
  if (out_.size() >= session_->options_.stream_high_water_bytes) {
    wants_room_ = true;
    return false;
  }
  // A full connection holds back a stream only beyond a small share of its
  // own, so streams whose peer reads keep moving while others sit at a zero
  // window.
  size_t connection_mark = session_->options_.connection_high_water_bytes;
  if (connection_mark > 0 && session_->buffered_total_ >= connection_mark &&
      out_.size() >= kConnectionShareFloor) {
    if (!waits_connection_room_) {
      waits_connection_room_ = true;
      session_->waiting_for_connection_room_.push_back(weak_from_this());
    }
    return false;
  }
  return true;
}

void Http2Stream::End(bool trailers) {
  if (session_ == nullptr || ending_) return;
  ending_ = true;
  trailers_ = trailers;
  if (data_deferred_) session_->ResumeData(this);
  session_->ScheduleSend();
}

void Http2Stream::SubmitTrailers(std::span<const HeaderField> fields) {
  if (session_ == nullptr) return;
  NvArray nv = ToNv(fields);
  nghttp2_submit_trailer(session_->session_, stream_id_, nv.data(), nv.size());
}

void Http2Stream::Reset(uint32_t error_code) {
  if (session_ == nullptr) return;
  nghttp2_submit_rst_stream(session_->session_, NGHTTP2_FLAG_NONE, stream_id_, error_code);
  session_->ScheduleSend();
}

void Http2Stream::Consume(size_t n) {
  if (session_ == nullptr || n == 0) return;
  nghttp2_session_consume(session_->session_, stream_id_, n);
  session_->ScheduleSend();  // a WINDOW_UPDATE may be due
}

Buffer Http2Stream::ShareReceived(std::string_view bytes) const {
  Http2Session* s = session_;
  size_t offset =
      s->receiving_offset_ + static_cast<size_t>(bytes.data() - s->receiving_slice_.data());
  return s->socket_->input().ShareRange(offset, bytes.size());
}

// ---- Http2Session

Http2Session::Http2Session(Role role, std::shared_ptr<Socket> socket, Http2Options options)
    : role_(role), socket_(std::move(socket)), options_(options) {}

Http2Session::~Http2Session() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

nghttp2_session_callbacks* Http2Session::Callbacks() {
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

bool Http2Session::Start() {
  nghttp2_option* option;
  nghttp2_option_new(&option);
  if (!options_.http_messaging) nghttp2_option_set_no_http_messaging(option, 1);
  if (options_.manual_flow_control) nghttp2_option_set_no_auto_window_update(option, 1);
  if (options_.ping_ack_delay.count() > 0) nghttp2_option_set_no_auto_ping_ack(option, 1);
  int rv = role_ == Role::kServer
               ? nghttp2_session_server_new2(&session_, Callbacks(), this, option)
               : nghttp2_session_client_new2(&session_, Callbacks(), this, option);
  nghttp2_option_del(option);
  if (rv != 0) return false;
  absl::InlinedVector<nghttp2_settings_entry, 4> settings = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(options_.stream_window_bytes)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options_.max_header_list_bytes},
  };
  if (role_ == Role::kClient) settings.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        options_.connection_window_bytes);
  Send();
  return true;
}

absl::Status Http2Session::AcceptUpgrade(std::string_view settings, bool head_request,
                                         std::span<const HeaderField> fields) {
  std::string payload;
  if (!absl::WebSafeBase64Unescape(absl::string_view(settings.data(), settings.size()), &payload)) {
    return absl::InvalidArgumentError("HTTP2-Settings is not base64url");
  }
  int rv = nghttp2_session_upgrade2(session_, reinterpret_cast<const uint8_t*>(payload.data()),
                                    payload.size(), head_request ? 1 : 0, nullptr);
  if (rv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP2-Settings refused: ", nghttp2_strerror(rv)));
  }
  std::shared_ptr<Http2Stream> stream = NewStream(1);
  if (stream == nullptr) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, 1, NGHTTP2_REFUSED_STREAM);
    return absl::OkStatus();
  }
  stream->session_ = this;
  stream->stream_id_ = 1;
  stream->block_kind_ = Http2Stream::HeadersKind::kRequest;
  nghttp2_session_set_stream_user_data(session_, 1, stream.get());
  streams_.emplace(1, stream);
  for (const HeaderField& f : fields) {
    if (!stream->OnHeader(Http2Stream::HeadersKind::kRequest, f.name, f.value)) {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, 1, NGHTTP2_REFUSED_STREAM);
      return absl::OkStatus();
    }
  }
  stream->OnHeaders(Http2Stream::HeadersKind::kRequest, /*end_stream=*/true);
  if (!stream->closed_) stream->OnEndStream();
  return absl::OkStatus();
}

Task<void> Http2Session::Run() {
  Socket* socket = socket_.get();
  // Bytes already received (whoever read ahead to tell the protocol) are
  // the session's first: feed them before waiting for more.
  bool first = !socket->input().empty();
  while (true) {
    if (!first) {
      absl::Status st = co_await socket->ReadMore();
      if (!st.ok()) break;
    }
    first = false;
    bool ok = Receive();
    Send();
    if (!ok || !WantsIo()) break;
  }
  finished_ = true;
  send_timer_.Cancel();
  ping_ack_timer_.Cancel();
  CloseAllStreams();
  // The last frames (replies, a GOAWAY saying why) leave, within a bound.
  Timer give_up([socket] { socket->Close(); });
  give_up.ArmAfter(loop(), std::chrono::seconds(1));
  // Drained or cut short by the timer, the socket closes next.
  auto drained = co_await socket->Drained();
  (void)drained;
  socket->Close();
}

bool Http2Session::Receive() {
  Buffer& input = socket_->input();
  receiving_offset_ = 0;
  for (size_t i = 0; i < input.slice_count(); ++i) {
    receiving_slice_ = input.slice(i);
    ssize_t rv = nghttp2_session_mem_recv(session_,
                                          reinterpret_cast<const uint8_t*>(receiving_slice_.data()),
                                          receiving_slice_.size());
    if (rv < 0) {
      ++protocol_errors_;
      OnProtocolError();
      CAPSTAN_LOG(warn, "http2: protocol error, closing the connection", "reason",
                  nghttp2_strerror(static_cast<int>(rv)));
      input.Clear();
      return false;
    }
    receiving_offset_ += receiving_slice_.size();
  }
  receiving_slice_ = {};
  input.Clear();
  return true;
}

void Http2Session::Send() {
  if (in_send_ || session_ == nullptr || finished_) return;
  // Held PING ACKs ride with whatever else is ready to leave now, or leave
  // alone once their delay is up.
  if (!held_ping_acks_.empty() &&
      (ping_acks_due_ || streams_.empty() || nghttp2_session_want_write(session_) != 0)) {
    SubmitHeldPingAcks();
  }
  in_send_ = true;
  int rv = nghttp2_session_send(session_);
  in_send_ = false;
  if (rv != 0) {
    CAPSTAN_LOG(warn, "http2: send failed, closing the connection", "reason", nghttp2_strerror(rv));
    socket_->Close();
    return;
  }
  if (room_.empty()) return;
  std::vector<std::weak_ptr<Http2Stream>> room;
  room.swap(room_);
  for (auto& weak : room) {
    std::shared_ptr<Http2Stream> stream = weak.lock();
    if (stream && !stream->closed_) stream->OnWriteRoom();
  }
}

void Http2Session::SubmitHeldPingAcks() {
  for (const std::array<uint8_t, 8>& payload : held_ping_acks_) {
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_ACK, payload.data());
  }
  held_ping_acks_.clear();
  ping_acks_due_ = false;
  ping_ack_timer_.Cancel();
}

void Http2Session::GoAway(uint32_t error_code) {
  if (session_ == nullptr || finished_) return;
  int32_t last = role_ == Role::kServer ? nghttp2_session_get_last_proc_stream_id(session_) : 0;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last, error_code, nullptr, 0);
  Send();
}

bool Http2Session::CanOpenStream() const {
  if (session_ == nullptr || finished_ || peer_went_away_ || socket_->closed()) return false;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) >
             streams_.size() &&
         nghttp2_session_get_next_stream_id(session_) <= (1u << 31) - 1;
}

absl::Status Http2Session::SubmitRequest(std::shared_ptr<Http2Stream> stream,
                                         std::span<const HeaderField> fields, bool end_stream) {
  if (role_ != Role::kClient) return absl::FailedPreconditionError("http2: not a client session");
  if (session_ == nullptr || finished_ || socket_->closed()) {
    return absl::UnavailableError("http2: the connection is closed");
  }
  if (peer_went_away_) return absl::UnavailableError("http2: the server sent GOAWAY");
  NvArray nv = ToNv(fields);
  nghttp2_data_provider data;
  data.source.ptr = stream.get();
  data.read_callback = &ReadData;
  int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                      end_stream ? nullptr : &data, stream.get());
  if (id < 0) {
    return absl::UnavailableError(
        absl::StrCat("http2: cannot open a stream: ", nghttp2_strerror(id)));
  }
  stream->session_ = this;
  stream->stream_id_ = id;
  stream->headers_sent_ = true;
  stream->ending_ = end_stream;
  stream->block_kind_ = Http2Stream::HeadersKind::kResponse;
  streams_.emplace(id, std::move(stream));
  ScheduleSend();
  return absl::OkStatus();
}

void Http2Session::SubmitResponse(Http2Stream* stream, std::span<const HeaderField> fields,
                                  bool end_stream) {
  NvArray nv = ToNv(fields);
  if (end_stream) {
    nghttp2_submit_response(session_, stream->stream_id_, nv.data(), nv.size(), nullptr);
    return;
  }
  nghttp2_data_provider data;
  data.source.ptr = stream;
  data.read_callback = &ReadData;
  nghttp2_submit_response(session_, stream->stream_id_, nv.data(), nv.size(), &data);
}

void Http2Session::ResumeData(Http2Stream* stream) {
  stream->data_deferred_ = false;
  nghttp2_session_resume_data(session_, stream->stream_id_);
}

void Http2Session::CloseAllStreams() {
  std::vector<std::shared_ptr<Http2Stream>> open;
  open.reserve(streams_.size());
  for (auto& [id, stream] : streams_) open.push_back(stream);
  for (auto& stream : open) CloseStream(stream.get(), NGHTTP2_CANCEL);
}

void Http2Session::CloseStream(Http2Stream* stream, uint32_t error_code) {
  auto it = streams_.find(stream->stream_id_);
  if (it == streams_.end()) return;
  std::shared_ptr<Http2Stream> hold = std::move(it->second);
  streams_.erase(it);
  if (session_ != nullptr)
    nghttp2_session_set_stream_user_data(session_, stream->stream_id_, nullptr);
  stream->closed_ = true;
  stream->session_ = nullptr;
  buffered_total_ -= stream->out_.size();
  stream->out_.Clear();
  stream->OnClose(error_code);
}

int Http2Session::OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  Http2Session* self = Self(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  int32_t id = frame->hd.stream_id;
  if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (self->role_ != Role::kServer) return 0;
    std::shared_ptr<Http2Stream> stream = self->NewStream(id);
    if (stream == nullptr) {
      // Its fields and data find no stream object and are dropped.
      nghttp2_submit_rst_stream(self->session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
      return 0;
    }
    stream->session_ = self;
    stream->stream_id_ = id;
    stream->block_kind_ = Http2Stream::HeadersKind::kRequest;
    nghttp2_session_set_stream_user_data(self->session_, id, stream.get());
    self->streams_.emplace(id, std::move(stream));
    return 0;
  }
  Http2Stream* stream = self->StreamOf(id);
  if (stream == nullptr) return 0;
  // A client's headers block is a response until a final (non-1xx) one has
  // arrived; after that, and always on the server, it is trailers.
  bool response = self->role_ == Role::kClient && !stream->final_response_;
  stream->block_kind_ =
      response ? Http2Stream::HeadersKind::kResponse : Http2Stream::HeadersKind::kTrailers;
  return 0;
}

int Http2Session::OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                           size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                           void* user) {
  Http2Session* self = Self(user);
  Http2Stream* stream = self->StreamOf(frame->hd.stream_id);
  if (stream == nullptr) return 0;
  std::string_view n = AsView(name, namelen);
  std::string_view v = AsView(value, valuelen);
  if (stream->block_kind_ == Http2Stream::HeadersKind::kResponse && n == ":status" &&
      !v.starts_with('1')) {
    stream->final_response_ = true;
  }
  if (!stream->OnHeader(stream->block_kind_, n, v)) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

int Http2Session::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  Http2Session* self = Self(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    self->peer_went_away_ = true;
    return 0;
  }
  if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 &&
      self->options_.ping_ack_delay.count() > 0) {
    // nghttp2 leaves the ACK to us (Start): held for the next frames.
    std::array<uint8_t, 8> payload;
    std::copy_n(frame->ping.opaque_data, payload.size(), payload.begin());
    self->held_ping_acks_.push_back(payload);
    if (self->held_ping_acks_.size() >= kMaxHeldPingAcks) {
      self->ping_acks_due_ = true;
    } else if (!self->ping_ack_timer_.armed()) {
      self->ping_ack_timer_.ArmAfter(self->loop(), self->options_.ping_ack_delay);
    }
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  Http2Stream* stream = self->StreamOf(frame->hd.stream_id);
  if (stream == nullptr) return 0;
  // Keep the stream alive through events that may end it.
  std::shared_ptr<Http2Stream> hold = stream->shared_from_this();
  bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (frame->hd.type == NGHTTP2_HEADERS) stream->OnHeaders(stream->block_kind_, end_stream);
  if (end_stream && !stream->closed_) stream->OnEndStream();
  return 0;
}

int Http2Session::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                              size_t len, void* user) {
  Http2Session* self = Self(user);
  Http2Stream* stream = self->StreamOf(stream_id);
  if (stream == nullptr) {
    // Nobody will consume it: give the window back at once.
    if (self->options_.manual_flow_control) nghttp2_session_consume(self->session_, stream_id, len);
    return 0;
  }
  std::shared_ptr<Http2Stream> hold = stream->shared_from_this();
  stream->OnData(AsView(data, len));
  return 0;
}

int Http2Session::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                void* user) {
  Http2Session* self = Self(user);
  Http2Stream* stream = self->StreamOf(stream_id);
  if (stream != nullptr) self->CloseStream(stream, error_code);
  return 0;
}

ssize_t Http2Session::OnSend(nghttp2_session*, const uint8_t* data, size_t length, int,
                             void* user) {
  Self(user)->socket_->Write(AsView(data, length));
  return static_cast<ssize_t>(length);
}

ssize_t Http2Session::ReadData(nghttp2_session*, int32_t, uint8_t*, size_t length,
                               uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* stream = static_cast<Http2Stream*>(source->ptr);
  size_t available = stream->out_.size();
  if (available == 0 && !stream->ending_) {
    stream->data_deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = std::min(length, available);
  if (n > 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == available && stream->ending_) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (stream->trailers_) {
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      stream->OnSendTrailers();
    }
  }
  return static_cast<ssize_t>(n);
}

int Http2Session::OnSendData(nghttp2_session*, nghttp2_frame*, const uint8_t* framehd,
                             size_t length, nghttp2_data_source* source, void* user) {
  Http2Session* self = Self(user);
  auto* stream = static_cast<Http2Stream*>(source->ptr);
  // No padding: we install no padding callback, so the header is 9 bytes.
  self->socket_->Write(AsView(framehd, 9));
  self->socket_->Write(stream->out_.Cut(length));
  self->buffered_total_ -= length;
  size_t low_water = self->options_.stream_high_water_bytes / 4;
  if (stream->wants_room_ && stream->out_.size() <= low_water) {
    stream->wants_room_ = false;
    self->room_.push_back(stream->weak_from_this());
  }
  if (self->waiting_for_connection_room_.empty()) return 0;
  if (self->buffered_total_ <= self->options_.connection_high_water_bytes / 4) {
    for (auto& weak : self->waiting_for_connection_room_) {
      std::shared_ptr<Http2Stream> waiting = weak.lock();
      if (waiting == nullptr || !waiting->waits_connection_room_) continue;
      waiting->waits_connection_room_ = false;
      self->room_.push_back(std::move(weak));
    }
    self->waiting_for_connection_room_.clear();
  } else if (stream->waits_connection_room_ && stream->out_.size() < kConnectionShareFloor) {
    // Its own share went out: it may write again. (The list holds at most
    // one entry per open stream.)
    stream->waits_connection_room_ = false;
    std::erase_if(self->waiting_for_connection_room_,
                  [stream](const std::weak_ptr<Http2Stream>& weak) {
                    std::shared_ptr<Http2Stream> waiting = weak.lock();
                    return waiting == nullptr || waiting.get() == stream;
                  });
    self->room_.push_back(stream->weak_from_this());
  }
  return 0;
}

int Http2Session::OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  Http2Session* self = Self(user);
  // The response is complete while the client may still be sending: tell it
  // to stop without error (RFC 9113 §8.1), as gRPC servers do.
  if (self->role_ == Role::kServer &&
      (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
      nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

}  // namespace capstan::net
