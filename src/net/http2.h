// Http2Session, Http2Stream: HTTP/2 on a net::Socket, server or client side,
// with nothing of the application in it.
//
// nghttp2 does the protocol (framing, HPACK, flow control, SETTINGS, PING,
// GOAWAY, the stream state machine); this feeds it the socket's input,
// hands its output to the socket without copying DATA payloads, and turns
// its callbacks into events on stream objects. gRPC (net::GrpcServer) and
// the gateway's downstream and upstream connections are built on it: each
// derives its stream type from Http2Stream and, on the server side, its
// connection type from Http2Session to create streams as peers open them.
//
//   class Echo : public net::Http2Stream {
//     void OnHeaders(HeadersKind, bool end_stream) override { ... }
//     void OnData(std::string_view bytes) override { body_.Append(bytes); }
//     void OnEndStream() override {
//       net::HeaderField fields[] = {{":status", "200"}};
//       SendHeaders(fields, /*end_stream=*/false);
//       Write(std::move(body_));
//       End();
//     }
//   };
//
// Client side: construct an Http2Session with Role::kClient over a connected
// socket, Start() it, run Run() as its driving coroutine, and open streams
// with SubmitRequest; response headers, data and trailers arrive as events
// on the stream object.
//
// Thread-safety: a session and its streams belong to the socket's loop.
#pragma once

#include <nghttp2/nghttp2.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::net {

class Http2Session;

// One field to send. The views must stay valid for the call that takes them
// (nghttp2 copies what it keeps).
struct HeaderField {
  std::string_view name;
  std::string_view value;
};

struct Http2Options {
  // SETTINGS_MAX_CONCURRENT_STREAMS announced to the peer (the streams it
  // may open to us).
  uint32_t max_concurrent_streams = 100;
  // Receive windows: per stream (SETTINGS_INITIAL_WINDOW_SIZE) and per
  // connection.
  int32_t stream_window_bytes = 1 << 20;
  int32_t connection_window_bytes = 16 << 20;
  // SETTINGS_MAX_HEADER_LIST_SIZE announced; a stream's OnHeader may
  // enforce its own bound as well.
  uint32_t max_header_list_bytes = 16 << 10;
  // nghttp2's HTTP messaging checks (RFC 9113 §8: pseudo-headers, field
  // validity, content-length against DATA). On for HTTP; a gRPC server turns
  // them off because gRPC clients send what gRPC servers accept, which is
  // not always strict HTTP (etcd's client sends "http://host:port" as
  // :authority).
  bool http_messaging = true;
  // Off: received DATA is returned to the peer's windows as it arrives. On:
  // only when the stream's consumer calls Consume, so a slow consumer
  // (a proxy's slow other side) holds the sender back.
  bool manual_flow_control = false;
  // A stream's Write returns false once this much output is queued on it;
  // OnWriteRoom follows when it falls to a quarter of it.
  size_t stream_high_water_bytes = 1 << 20;
  // The same over all of the connection's streams: a Write returns false
  // once the streams together hold this much and the stream itself holds
  // at least 16 KiB; OnWriteRoom follows when the total falls to a quarter
  // of it or the stream's own bytes fall below 16 KiB. A
  // peer that opens many streams and reads none (a zero window) then holds
  // back its producers at this bound, not at streams x the stream's mark.
  // 0: no connection bound.
  size_t connection_high_water_bytes = 0;
  // How long the ACK of a received PING may wait for other frames to leave
  // with (0: sent at once, nghttp2's default). gRPC clients ping once per
  // round trip while data flows (grpc-go's bandwidth-delay estimator); on a
  // server whose answers come a little later, each ACK sent at once is a
  // write of its own. Held, it leaves with the next frames the session
  // sends, or alone when the delay is up. Held only while streams are open
  // (their frames will follow), and at most 8 (more are sent at once).
  std::chrono::microseconds ping_ack_delay{0};
};

// One stream. Derive from it for the application's per-stream state; the
// session calls the virtual On* events on the loop, in order: OnHeader per
// field and OnHeaders per block (request or response headers, then
// trailers), OnData per DATA payload, OnEndStream when the peer has sent
// everything, and OnClose exactly once when the stream is over.
class Http2Stream : public std::enable_shared_from_this<Http2Stream> {
 public:
  enum class HeadersKind : uint8_t {
    kRequest,   // server side: the request's headers
    kResponse,  // client side: a response's headers (1xx interim ones too)
    kTrailers,  // either side: the headers block after the body
  };

  Http2Stream() = default;
  virtual ~Http2Stream() = default;
  Http2Stream(const Http2Stream&) = delete;
  Http2Stream& operator=(const Http2Stream&) = delete;

  int32_t stream_id() const { return stream_id_; }
  // Null once the stream is over.
  Http2Session* session() const { return session_; }
  bool closed() const { return closed_; }
  bool headers_sent() const { return headers_sent_; }
  bool ending() const { return ending_; }
  // Output queued on the stream and not yet framed.
  size_t buffered_bytes() const { return out_.size(); }

  // ---- events (loop thread)
  // One field of a headers block. Returning false resets the stream (a
  // limit was passed).
  virtual bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) {
    (void)kind, (void)name, (void)value;
    return true;
  }
  // A headers block is complete. `end_stream`: the peer sends nothing more.
  virtual void OnHeaders(HeadersKind kind, bool end_stream) { (void)kind, (void)end_stream; }
  // A DATA payload (the view is valid during the call; ShareReceived turns it
  // into a Buffer without copying).
  virtual void OnData(std::string_view bytes) { (void)bytes; }
  // The peer ended its side (END_STREAM), after its last data or trailers.
  virtual void OnEndStream() {}
  // Output fell to a quarter of the high mark after a Write returned false.
  virtual void OnWriteRoom() {}
  // The stream is over: `error_code` is the HTTP/2 code it was reset with
  // (NGHTTP2_NO_ERROR after a complete exchange, NGHTTP2_CANCEL when the
  // connection went away under it).
  virtual void OnClose(uint32_t error_code) { (void)error_code; }
  // The body queued before End(/*trailers=*/true) has been framed: submit
  // the trailers now with SubmitTrailers (the fields may live on the stack).
  virtual void OnSendTrailers() {}

  // ---- sending (loop thread; ignored once the stream is over)
  // Server side: the response headers. `end_stream`: no body follows.
  void SendHeaders(std::span<const HeaderField> fields, bool end_stream);
  // Queues body bytes (no copy: the slices leave as DATA frames). Returns
  // false once the queue reaches the high mark (OnWriteRoom follows); the
  // bytes are queued either way. REQUIRES: headers sent (or, client side,
  // the request submitted) and End not called.
  bool Write(Buffer data);
  // Ends the body after the queued bytes: with END_STREAM on the last DATA
  // frame, or with trailers (OnSendTrailers is asked for them).
  void End(bool trailers = false);
  // For OnSendTrailers.
  void SubmitTrailers(std::span<const HeaderField> fields);
  // Resets the stream with `error_code` (e.g. NGHTTP2_CANCEL).
  void Reset(uint32_t error_code);
  // With Http2Options::manual_flow_control: `n` received bytes have been
  // dealt with and may be sent again by the peer.
  void Consume(size_t n);
  // A Buffer over bytes OnData is being given (no copy). REQUIRES: inside
  // OnData, `bytes` a part of its argument.
  Buffer ShareReceived(std::string_view bytes) const;

 private:
  friend class Http2Session;
  Http2Session* session_ = nullptr;
  int32_t stream_id_ = -1;
  bool closed_ = false;
  bool headers_sent_ = false;
  bool ending_ = false;
  bool trailers_ = false;
  bool data_deferred_ = false;
  bool wants_room_ = false;
  bool waits_connection_room_ = false;
  bool final_response_ = false;  // client side: a non-1xx status arrived
  HeadersKind block_kind_ = HeadersKind::kRequest;
  Buffer out_;
};

// One HTTP/2 connection. A server derives from it and implements NewStream;
// a client uses it as is (or derives to observe the connection's end).
class Http2Session {
 public:
  enum class Role : uint8_t { kServer, kClient };

  Http2Session(Role role, std::shared_ptr<Socket> socket, Http2Options options);
  virtual ~Http2Session();
  Http2Session(const Http2Session&) = delete;
  Http2Session& operator=(const Http2Session&) = delete;

  Role role() const { return role_; }
  Socket* socket() const { return socket_.get(); }
  EventLoop* loop() const { return socket_->loop(); }
  const Http2Options& options() const { return options_; }
  // Output queued on all streams and not yet framed.
  size_t buffered_bytes() const { return buffered_total_; }

  // Creates the nghttp2 session and queues our SETTINGS (and, as a client,
  // the connection preface). False if nghttp2 could not be set up.
  bool Start();
  // Drives the connection until it ends (peer closed, protocol error, both
  // sides done after GOAWAY, or Close): reads, feeds nghttp2, sends what it
  // produced; at the end every open stream is closed (OnClose with
  // NGHTTP2_CANCEL) and the last frames get up to a second to leave before
  // the socket closes. REQUIRES: Start() returned true.
  Task<void> Run();

  // Server side, after Start() and before Run(): an HTTP/1.1 request that
  // asked to continue as HTTP/2 and was answered 101 (h2c upgrade, RFC 7540
  // §3.2) becomes stream 1, already ended by the client. `settings` is its
  // HTTP2-Settings field (base64url); `fields` are the request's, pseudo-
  // headers first, given to a NewStream(1) stream as a HEADERS block with
  // END_STREAM would be. INVALID_ARGUMENT for bad settings (the caller
  // closes the connection).
  absl::Status AcceptUpgrade(std::string_view settings, bool head_request,
                             std::span<const HeaderField> fields);

  // Client side: opens a stream with the request `fields` (pseudo-headers
  // first). Unless `end_stream`, the body follows through stream->Write and
  // End. Fails when the peer's stream limit or GOAWAY forbids a new stream.
  absl::Status SubmitRequest(std::shared_ptr<Http2Stream> stream,
                             std::span<const HeaderField> fields, bool end_stream);

  // Tells the peer no new streams will be accepted (streams already open
  // go on).
  void GoAway(uint32_t error_code = NGHTTP2_NO_ERROR);
  // Stops the connection now: Run ends and closes every stream.
  void Close() { socket_->Close(); }

  // Whether this side may open another stream (client side: the peer's
  // SETTINGS_MAX_CONCURRENT_STREAMS and GOAWAY allow it).
  bool CanOpenStream() const;
  size_t open_streams() const { return streams_.size(); }
  // The session ended: Run returned, or a protocol error / GOAWAY exchange
  // finished it.
  bool finished() const { return finished_; }
  // The peer sent GOAWAY (client side: open no more streams here).
  bool peer_went_away() const { return peer_went_away_; }
  uint64_t protocol_errors() const { return protocol_errors_; }
  // PING ACKs held for the next frames (Http2Options::ping_ack_delay).
  size_t held_ping_acks() const { return held_ping_acks_.size(); }

  // ---- for Http2Stream
  // Sends what nghttp2 has ready in this turn, after the current callbacks
  // (everything a turn produced leaves together).
  void ScheduleSend() {
    if (!send_timer_.armed()) send_timer_.Arm(loop(), loop()->now());
  }

 protected:
  // Server side: the peer opened stream `stream_id`; return its object, or
  // null to refuse it (RST_STREAM REFUSED_STREAM).
  virtual std::shared_ptr<Http2Stream> NewStream(int32_t stream_id) {
    (void)stream_id;
    return nullptr;
  }
  // The peer broke the protocol; the session is ending (for counters).
  virtual void OnProtocolError() {}

 private:
  friend class Http2Stream;
  static nghttp2_session_callbacks* Callbacks();
  static Http2Session* Self(void* user) { return static_cast<Http2Session*>(user); }
  Http2Stream* StreamOf(int32_t stream_id) const {
    return static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session_, stream_id));
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

  // Feeds the bytes received; false after a protocol error (nghttp2 has
  // queued a GOAWAY saying why).
  bool Receive();
  // Hands every frame nghttp2 has ready to the socket.
  void Send();
  bool WantsIo() const {
    return nghttp2_session_want_read(session_) != 0 || nghttp2_session_want_write(session_) != 0;
  }
  void SubmitResponse(Http2Stream* stream, std::span<const HeaderField> fields, bool end_stream);
  void ResumeData(Http2Stream* stream);
  void CloseStream(Http2Stream* stream, uint32_t error_code);
  void CloseAllStreams();
  // Queues the held PING ACKs in nghttp2 (they leave with this send).
  void SubmitHeldPingAcks();

  Role role_;
  std::shared_ptr<Socket> socket_;
  Http2Options options_;
  nghttp2_session* session_ = nullptr;
  absl::flat_hash_map<int32_t, std::shared_ptr<Http2Stream>> streams_;
  Timer send_timer_{[this] { Send(); }};
  // Payloads of PINGs not yet acknowledged, and when the oldest must be.
  static constexpr size_t kMaxHeldPingAcks = 8;
  std::vector<std::array<uint8_t, 8>> held_ping_acks_;
  bool ping_acks_due_ = false;
  Timer ping_ack_timer_{[this] {
    ping_acks_due_ = true;
    Send();
  }};
  std::vector<std::weak_ptr<Http2Stream>> room_;
  // Output queued on all streams and not yet framed; the streams a full
  // connection held back (Http2Options::connection_high_water_bytes).
  size_t buffered_total_ = 0;
  std::vector<std::weak_ptr<Http2Stream>> waiting_for_connection_room_;
  bool in_send_ = false;
  bool finished_ = false;
  bool peer_went_away_ = false;
  uint64_t protocol_errors_ = 0;
  // While Receive feeds one slice of the input: that slice's offset in the
  // input and its bytes, so ShareReceived can find a DATA payload in it.
  size_t receiving_offset_ = 0;
  std::string_view receiving_slice_;
};

}  // namespace capstan::net
