// GrpcServer: gRPC over HTTP/2 on the runtime's event loops.
//
// net::Http2Session does HTTP/2 (nghttp2: framing, HPACK, flow control,
// PING, GOAWAY); this server adds gRPC on top: the length-prefixed messages, grpc-status
// trailers, grpc-timeout deadlines, and dispatch by path to handlers that
// run on the loop that owns the connection. It exists so the store can
// serve the etcd v3 API without libgrpc++'s thread hand-offs and copies per
// call (docs/benchmarks/store-analysis.md): a request is parsed, handled and
// answered on one thread, and every reply written in a turn leaves in one
// system call.
//
//   net::GrpcServer server({});
//   server.AddUnary("/pkg.Svc/Echo", [](net::GrpcCallPtr call, net::Buffer req) {
//     call->Reply(std::move(req));
//   });
//   int port = server.Listen(group.get(), "127.0.0.1", 0).value();
//   ...
//   server.Shutdown(std::chrono::seconds(2));
//
// Thread-safety: a call and its handler belong to the connection's loop.
// From another thread, reach a call through its loop (call->loop()->Post or
// GrpcCall::FinishFromAnyThread). Listen and Shutdown are called from a
// thread that is not one of the group's loops.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "base/status.h"
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/grpc_wire.h"
#include "net/http2.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/task.h"
#include "net/tls.h"

namespace capstan::net {

class GrpcConnection;
class GrpcCall;
class GrpcServer;
using GrpcCallPtr = std::shared_ptr<GrpcCall>;

// The events of one streaming call, on its loop. After OnDone nothing more
// is delivered and the handler is destroyed.
class GrpcStreamHandler {
 public:
  virtual ~GrpcStreamHandler() = default;
  // One whole request message.
  virtual void OnMessage(Buffer message) = 0;
  // The client sent END_STREAM: no more messages will come.
  virtual void OnHalfClose() {}
  // Output buffered for this call fell below the low mark after a Write
  // returned false.
  virtual void OnWriteRoom() {}
  // The call is over. `cancelled`: it ended before the server finished it
  // (the client reset it, the connection was lost, the deadline passed, the
  // server shut down).
  virtual void OnDone(bool cancelled) { (void)cancelled; }
};

// Unary: runs once the whole request (exactly one message) has arrived.
using GrpcUnaryHandler = std::function<void(const GrpcCallPtr& call, Buffer request)>;
// Streaming (any of the three shapes; the wire is the same): makes the
// handler that receives the call's events.
using GrpcStreamFactory = std::function<std::unique_ptr<GrpcStreamHandler>(const GrpcCallPtr&)>;

// A registered method: one of the two is set.
struct GrpcMethod {
  GrpcUnaryHandler unary;
  GrpcStreamFactory stream;
};

// A request's custom metadata, every field in one buffer: one allocation per
// call rather than two per field (calls are short; the fields are few).
class GrpcMetadata {
 public:
  using Field = std::pair<std::string_view, std::string_view>;
  class Iterator {
   public:
    using value_type = Field;
    using difference_type = std::ptrdiff_t;
    Field operator*() const;
    Iterator& operator++();
    bool operator==(const Iterator& other) const { return pos_ == other.pos_; }

   private:
    friend class GrpcMetadata;
    Iterator(const std::string* blob, size_t pos) : blob_(blob), pos_(pos) {}
    const std::string* blob_;
    size_t pos_;
  };

  void Add(std::string_view name, std::string_view value);
  // The first value of `name`, or nullopt.
  std::optional<std::string_view> Find(std::string_view name) const;
  bool empty() const { return blob_.empty(); }
  Iterator begin() const { return Iterator(&blob_, 0); }
  Iterator end() const { return Iterator(&blob_, blob_.size()); }

 private:
  // Per field: name length and value length (4 bytes each), name, value.
  std::string blob_;
};

// One call: an HTTP/2 stream carrying gRPC. The Http2Stream side is the
// transport's; handlers use the methods below.
class GrpcCall : public Http2Stream {
 public:
  ~GrpcCall() override;

  // "/package.Service/Method".
  const std::string& method() const { return route_ != nullptr ? route_->first : path_; }
  // Request metadata (custom headers), names in lowercase as HTTP/2 sends them.
  const GrpcMetadata& metadata() const { return metadata_; }
  // The first value of `name`, or nullopt.
  std::optional<std::string_view> FindMetadata(std::string_view name) const {
    return metadata_.Find(name);
  }
  EventLoop* loop() const { return loop_; }
  // When grpc-timeout ends the call (time_point::max() without one); set
  // before the method's handler or factory runs.
  std::chrono::steady_clock::time_point deadline() const { return deadline_at_; }
  // The Common Name of the client certificate the connection was opened
  // with, or "" (clear text, or a TLS listener that asks for no client
  // certificate). A listener asks only when its context has a client CA
  // (TlsServerOptions::client_ca_file), and then refuses any certificate
  // that CA did not sign: a non-empty name is always a verified one. The
  // store's auth takes it as the user, as etcd does with --client-cert-auth.
  const std::string& peer_common_name() const { return peer_identity().common_name; }
  // The whole verified client certificate identity (CN, SAN DNS and URI
  // names); empty as peer_common_name is.
  const TlsPeerIdentity& peer_identity() const;
  // The same, shared by the connection's calls (null without one).
  const std::shared_ptr<const TlsPeerIdentity>& shared_peer_identity() const {
    return peer_identity_;
  }

  // The call is over (finished and sent, reset, or its connection is gone).
  bool done() const { return done_; }
  bool cancelled() const { return cancelled_; }

  // ---- loop thread
  // Queues one response message (serialized). Returns false once the call's
  // buffered output reaches the high mark (the handler's OnWriteRoom is
  // called when it drains); the message is queued either way. Dropped after
  // Finish or when the call is over.
  bool Write(Buffer message);
  // The same for a message that already carries its length prefix
  // (FrameGrpcMessage): no second allocation for the prefix.
  bool WriteFramed(Buffer framed);
  // Ends the call with `status` once the queued messages are sent.
  void Finish(const absl::Status& status);
  // Trailing metadata sent with the status (before Finish; `name` in lower
  // case, not a grpc- reserved one).
  void AddTrailer(std::string_view name, std::string_view value);
  // Unary: one response message, then OK.
  void Reply(Buffer message) {
    Write(std::move(message));
    Finish(absl::OkStatus());
  }

  // ---- any thread
  // Replies with `framed` (a message with its length prefix, from
  // FrameGrpcMessage; status OK) or fails with `status`, on the call's loop.
  // The call may be over by then; nothing is sent then.
  // Inside a GrpcFinishBatch on this thread the answer waits for the end
  // of the batch.
  static void FinishFromAnyThread(GrpcCallPtr call, absl::Status status,
                                  std::optional<Buffer> framed);

 private:
  friend class GrpcFinishBatch;
  friend class GrpcConnection;
  GrpcCall(GrpcServer* server, EventLoop* loop) : server_(server), loop_(loop) {}
  GrpcCallPtr self() { return std::static_pointer_cast<GrpcCall>(shared_from_this()); }

  // ---- Http2Stream events
  bool OnHeader(HeadersKind kind, std::string_view name, std::string_view value) override;
  void OnHeaders(HeadersKind kind, bool end_stream) override;
  void OnData(std::string_view bytes) override;
  void OnEndStream() override;
  void OnWriteRoom() override;
  void OnClose(uint32_t error_code) override;
  void OnSendTrailers() override;

  void Dispatch();
  void DeliverMessages();
  // Ends a call the handler did not end (bad request, limits): the handler,
  // if any, sees it cancelled.
  void Fail(const absl::Status& status) {
    cancelled_ = true;
    Finish(status);
  }

  GrpcServer* server_;
  EventLoop* loop_;
  // The connection's verified client identity (shared by its calls), or
  // null in clear text.
  std::shared_ptr<const TlsPeerIdentity> peer_identity_;
  // A registered method's entry (its name is the key), else the path as sent.
  const std::pair<const std::string, GrpcMethod>* route_ = nullptr;
  std::string path_;
  std::string http_method_;
  bool grpc_content_type_ = false;  // content-type application/grpc[+proto...]
  std::string timeout_;
  GrpcMetadata metadata_;
  size_t metadata_bytes_ = 0;

  bool dispatched_ = false;
  const GrpcUnaryHandler* unary_ = nullptr;  // set for unary methods
  bool finishing_ = false;
  bool done_ = false;
  bool cancelled_ = false;
  absl::Status status_;
  std::unique_ptr<GrpcMessageReader> reader_;
  std::optional<Buffer> unary_request_;
  int unary_messages_ = 0;
  std::unique_ptr<GrpcStreamHandler> handler_;
  std::unique_ptr<Timer> deadline_;
  std::vector<std::pair<std::string, std::string>> extra_trailers_;
  std::chrono::steady_clock::time_point deadline_at_ = std::chrono::steady_clock::time_point::max();
};

struct GrpcServerOptions {
  // Larger request messages end the call RESOURCE_EXHAUSTED.
  size_t max_receive_message_bytes = 4 << 20;
  // SETTINGS_MAX_CONCURRENT_STREAMS announced to clients.
  uint32_t max_concurrent_streams = 16384;
  // HTTP/2 receive windows: per stream and per connection.
  int32_t stream_window_bytes = 1 << 20;
  int32_t connection_window_bytes = 16 << 20;
  // Request metadata beyond this ends the stream (RST_STREAM).
  size_t max_metadata_bytes = 16 << 10;
  // A streaming call's Write returns false from this much buffered output;
  // OnWriteRoom comes when it falls to a quarter of it.
  size_t stream_high_water_bytes = 1 << 20;
  // A client's PING is acknowledged with the next answers on its connection,
  // at most this much later (Http2Options::ping_ack_delay): gRPC clients
  // ping once per round trip while calls flow, and an ACK sent alone is a
  // write of its own for each. 0: at once.
  std::chrono::microseconds ping_ack_delay{5000};
};

// Holds the answers that FinishFromAnyThread gets on this thread while it
// lives, and hands each loop its share in one Post when it ends, in the
// order they were given. A thread that finishes many calls at once (the
// store's applier answers a whole committed batch) then wakes each loop
// once, and the loop frames all of a connection's answers in one turn and
// one write, where a Post per call could wake it, and flush, once per
// call. Calls on the thread's own loop are finished at once, as without a
// batch. Batches nest; the outermost one posts.
//
//   {
//     GrpcFinishBatch batch;
//     for (auto& [call, reply] : answers) GrpcCall::FinishFromAnyThread(call, ok, reply);
//   }  // one Post per loop here
class GrpcFinishBatch {
 public:
  GrpcFinishBatch();
  ~GrpcFinishBatch();
  GrpcFinishBatch(const GrpcFinishBatch&) = delete;
  GrpcFinishBatch& operator=(const GrpcFinishBatch&) = delete;
};

class GrpcServer {
 public:
  explicit GrpcServer(GrpcServerOptions options = {}) : options_(options) {}
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // REQUIRES: before the first Listen.
  void AddUnary(std::string path, GrpcUnaryHandler handler);
  void AddStream(std::string path, GrpcStreamFactory factory);
  // Handles every path not added (without it: UNIMPLEMENTED).
  void SetFallback(GrpcStreamFactory factory) { fallback_ = std::move(factory); }
  // Replaces every handler added so far with what the wrappers make of it:
  // a check every method passes (the store's learner gate). REQUIRES:
  // before the first Listen.
  void WrapMethods(
      const std::function<GrpcUnaryHandler(const std::string& path, GrpcUnaryHandler)>& unary,
      const std::function<GrpcStreamFactory(const std::string& path, GrpcStreamFactory)>& stream);

  // Listens on host:port on every loop of `group` (SO_REUSEPORT); port 0
  // picks one. Returns the port. May be called for several addresses.
  // With `tls`, every accepted connection starts TLS with the context it
  // returns at that moment (so a reloaded certificate serves the next
  // connection); the context should offer ALPN "h2". A client that fails
  // the handshake (clear text, an untrusted certificate) is closed.
  absl::StatusOr<int> Listen(LoopGroup* group, const std::string& host, int port,
                             TlsContextSource tls = nullptr);

  // For a server that shares its port with another protocol and hands over
  // the connections that turn out to be HTTP/2 (rpc::Server): Attach takes
  // the loops once (instead of Listen; from a thread that is not one of
  // them), then Serve runs each connection, on its socket's loop. Bytes the
  // caller read ahead to tell the protocol stay in socket->input() and are
  // the session's first. After Shutdown began, Serve closes the socket.
  void Attach(LoopGroup* group);
  void Serve(std::shared_ptr<Socket> socket);

  // REQUIRES: the loop group is still running (stop it after this).
  // Stops accepting, sends GOAWAY, lets calls in flight finish for up to
  // `grace`, then cancels the rest and closes every connection. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  struct Stats {
    uint64_t connections = 0;  // open now
    uint64_t calls_active = 0;
    uint64_t calls_started = 0;
    uint64_t protocol_errors = 0;
    uint64_t tls_refused = 0;  // accepted connections whose TLS did not start
  };
  Stats stats() const;
  const GrpcServerOptions& options() const { return options_; }

 private:
  friend class GrpcConnection;
  friend class GrpcCall;
  struct LoopState {
    EventLoop* loop = nullptr;
    std::vector<std::unique_ptr<Listener>> listeners;
    std::vector<std::weak_ptr<GrpcConnection>> connections;
    bool closed = false;  // Shutdown began: no new connections
  };

  Task<void> AcceptLoop(LoopState* state, Listener* listener, TlsContextSource tls);
  void ServeAccepted(LoopState* state, std::shared_ptr<Socket> socket);
  Task<void> ServeConnection(std::shared_ptr<GrpcConnection> conn);
  void TaskEnded();
  void OnCallEnded();

  GrpcServerOptions options_;
  // Node-based: calls point at their method's entry.
  absl::node_hash_map<std::string, GrpcMethod> methods_;
  absl::flat_hash_set<std::string> services_;
  GrpcStreamFactory fallback_;
  std::vector<std::unique_ptr<LoopState>> loops_;
  bool shut_down_ = false;

  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> calls_active_{0};
  std::atomic<uint64_t> calls_started_{0};
  std::atomic<uint64_t> protocol_errors_{0};
  std::atomic<uint64_t> tls_refused_{0};
  // Accept loops and connections still running: Shutdown waits for none.
  std::atomic<int> tasks_{0};
  std::mutex drain_mu_;
  std::condition_variable drained_;
};

}  // namespace capstan::net
