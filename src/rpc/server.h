// The Capstan RPC server: services with typed or generic methods, served on
// one event loop per thread with SO_REUSEPORT listeners. Handlers are
// coroutines that run on the loop that received the call; a handler that
// must block hands its work to a pool of its own (there is no hidden M:N
// scheduler). Many calls share a connection and finish in any order; the
// responses of one loop turn leave in one send.
//
//   class Greeter : public rpc::Service {
//    public:
//     Greeter() : Service("demo.Greeter") {
//       AddUnary<HelloRequest, HelloReply>("Hello", [](rpc::ServerContext& ctx,
//           const HelloRequest& req, HelloReply* reply) -> net::Task<absl::Status> {
//         reply->set_text("hi " + req.name());
//         co_return absl::OkStatus();
//       });
//     }
//   };
//   rpc::Server server({.port = 0, .threads = 2});
//   Greeter greeter;
//   server.AddService(&greeter);
//   RETURN_IF_ERROR(server.Start());
//   ...
//   server.Shutdown(std::chrono::seconds(5));   // drains in-flight calls
//
// Generated code (protoc-gen-capstan) writes the Service subclass for you.
//
// Thread-safety: AddService before Start; Start, Shutdown and the getters
// from any one thread. Handlers run on loop threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "base/metrics.h"
#include "base/status.h"
#include "google/protobuf/message_lite.h"
#include "mesh/concurrency_limiter.h"
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/loop_group.h"
#include "net/task.h"
#include "net/tls.h"
#include "rpc/protocol.h"
#include "rpc/serialization.h"

namespace capstan::net {
class HttpServer;
class Socket;
class GrpcServer;
class GrpcCall;
}  // namespace capstan::net

namespace capstan::rpc {

using Clock = std::chrono::steady_clock;
using MetadataList = std::vector<std::pair<std::string, std::string>>;

class ServerCall;

namespace internal {
class StreamState;
class GrpcCallBridge;
void UnlinkGrpcBridge(ServerCall* call);
}  // namespace internal

// What a handler knows about its call.
class ServerContext {
 public:
  std::string_view method() const { return method_; }
  // time_point::max() when the caller set no deadline.
  Clock::time_point deadline() const { return deadline_; }
  bool has_deadline() const { return deadline_ != Clock::time_point::max(); }
  const MetadataList& metadata() const { return metadata_; }
  // The value of a metadata key, or "" when absent.
  std::string_view Metadata(std::string_view key) const;
  // True once the caller cancelled, its connection dropped, or the server
  // stopped waiting for in-flight calls.
  bool cancelled() const { return cancelled_; }
  net::EventLoop* loop() const { return loop_; }
  // The call came over gRPC (HTTP/2) rather than Capstan's own framing.
  bool grpc() const { return grpc_; }
  // The call came over TLS (ServerOptions::tls).
  bool tls() const { return tls_; }
  // Who the client's certificate says it is (subject CN, SAN DNS and URI
  // names): verified against ServerTlsOptions::client_ca_file whenever it
  // is not empty. Empty in clear text and when the client sent none.
  const net::TlsPeerIdentity& peer_identity() const;
  // Metadata sent back with the response.
  void AddTrailer(std::string key, std::string value) {
    trailers_.emplace_back(std::move(key), std::move(value));
  }

 private:
  friend class ServerCall;
  friend class Server;
  friend class internal::GrpcCallBridge;
  std::string method_;
  Clock::time_point deadline_ = Clock::time_point::max();
  MetadataList metadata_;
  MetadataList trailers_;
  bool cancelled_ = false;
  bool grpc_ = false;
  bool tls_ = false;
  // Shared by the calls of one connection; null without a certificate.
  std::shared_ptr<const net::TlsPeerIdentity> peer_identity_;
  net::EventLoop* loop_ = nullptr;
};

// One method's implementation behind a type-erased face.
class MethodHandler {
 public:
  virtual ~MethodHandler() = default;
  // Parses the request, runs the handler and finishes the call.
  virtual net::Task<void> Run(ServerCall* call) = 0;
  // Streaming methods receive MESSAGE frames after the request and may send
  // their own; their calls last as long as the stream, so the adaptive
  // limiter (which learns from unary latency) leaves them alone.
  virtual bool streaming() const { return false; }
  // The handler reads the one request message the call opened with
  // (call->request()): over gRPC the call starts once it has arrived.
  // Otherwise it reads the client's messages as they come (ReadBytes).
  virtual bool opens_with_request() const { return !streaming(); }
};

// A call in progress on the server (one per REQUEST frame).
class ServerCall {
 public:
  ServerContext& context() { return context_; }
  const net::Buffer& request() const { return request_; }
  net::Buffer TakeRequest() { return std::move(request_); }
  // Sends the response (with `message` when the status is OK and it is not
  // null) unless the caller is gone. Once per call.
  void Finish(const absl::Status& status, const google::protobuf::MessageLite* message);
  void FinishBytes(const absl::Status& status, net::Buffer message);
  bool finished() const { return finished_; }
  // The status code the call finished with.
  absl::StatusCode code() const { return code_; }

  // Streaming methods only. The client's next message (the one carried by
  // the REQUEST first, when it had one); false once the client half-closed
  // and everything was read, or the call was cancelled or finished.
  // Returning credit to the client as messages are taken is done here.
  net::Task<bool> ReadBytes(net::Buffer* message);
  // Sends one message of `size` bytes written by `write`, after waiting for
  // flow-control credit; false when the call was cancelled or finished.
  net::Task<bool> WriteWith(size_t size, absl::FunctionRef<void(char*)> write);
  // Why the call must fail although its handler may say OK (a client
  // message that did not parse); OK otherwise.
  const absl::Status& stream_error() const { return stream_error_; }
  void set_stream_error(absl::Status status) { stream_error_ = std::move(status); }

  ~ServerCall();

 private:
  friend class Server;
  friend class internal::GrpcCallBridge;
  friend void internal::UnlinkGrpcBridge(ServerCall* call);
  struct Connection;
  ServerCall() = default;
  bool Detach();
  // The client cancelled or went away: waiting reads and writes return.
  void Cancel();
  Meta ResponseMeta(const absl::Status& status) const;
  // Over gRPC: the trailers the handler added, then the status.
  void FinishGrpc(const absl::Status& status);

  ServerContext context_;
  net::Buffer request_;
  bool request_has_message_ = false;
  // The transport: a Capstan connection, or a gRPC call (HTTP/2 stream)
  // with the bridge that feeds it its events.
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<net::GrpcCall> grpc_call_;
  internal::GrpcCallBridge* grpc_bridge_ = nullptr;
  std::unique_ptr<internal::StreamState> stream_;
  absl::Status stream_error_;
  uint32_t stream_id_ = 0;
  bool finished_ = false;
  absl::StatusCode code_ = absl::StatusCode::kUnknown;
};

// The typed faces of a streaming call, handed to handlers.
template <typename Request>
class ServerReader {
 public:
  explicit ServerReader(ServerCall* call) : call_(call) {}
  // The client's next message; false at the end of its stream, on
  // cancellation, or when a message does not parse (the call then ends
  // with INVALID_ARGUMENT whatever the handler returns).
  net::Task<bool> Read(Request* message) {
    net::Buffer bytes;
    if (!co_await call_->ReadBytes(&bytes)) co_return false;
    if (!ParseFromBuffer(bytes, message)) {
      call_->set_stream_error(
          absl::InvalidArgumentError("stream message does not parse as " + message->GetTypeName()));
      co_return false;
    }
    co_return true;
  }

 protected:
  ServerCall* call_;
};

template <typename Response>
class ServerWriter {
 public:
  explicit ServerWriter(ServerCall* call) : writer_call_(call) {}
  // Sends a message, waiting while the client has a full window unread;
  // false when the call was cancelled (stop producing) or finished.
  net::Task<bool> Write(const Response& message) {
    size_t size = message.ByteSizeLong();
    co_return co_await writer_call_->WriteWith(size,
                                               [&](char* dst) { SerializeTo(message, size, dst); });
  }

 private:
  ServerCall* writer_call_;
};

template <typename Request, typename Response>
class ServerReaderWriter : public ServerReader<Request>, public ServerWriter<Response> {
 public:
  explicit ServerReaderWriter(ServerCall* call)
      : ServerReader<Request>(call), ServerWriter<Response>(call) {}
};

using GenericHandler =
    absl::AnyInvocable<net::Task<absl::StatusOr<net::Buffer>>(ServerContext&, net::Buffer)>;
// Raw streaming: the handler reads (ServerCall::ReadBytes), writes
// (WriteWith) and finishes the call itself (FinishBytes).
using GenericStreamHandler = absl::AnyInvocable<net::Task<void>(ServerCall&)>;

template <typename Request, typename Response>
using UnaryHandler =
    absl::AnyInvocable<net::Task<absl::Status>(ServerContext&, const Request&, Response*)>;

// A unary handler given the request as it arrived: the serialized message
// (protobuf wire format, possibly in several slices), not parsed. For a hot
// method that decodes the wire format straight into its own types.
template <typename Response>
using UnaryBytesHandler =
    absl::AnyInvocable<net::Task<absl::Status>(ServerContext&, const net::Buffer&, Response*)>;

template <typename Request, typename Response>
using ServerStreamingHandler = absl::AnyInvocable<net::Task<absl::Status>(
    ServerContext&, const Request&, ServerWriter<Response>&)>;

template <typename Request, typename Response>
using ClientStreamingHandler =
    absl::AnyInvocable<net::Task<absl::Status>(ServerContext&, ServerReader<Request>&, Response*)>;

template <typename Request, typename Response>
using BidiStreamingHandler = absl::AnyInvocable<net::Task<absl::Status>(
    ServerContext&, ServerReaderWriter<Request, Response>&)>;

namespace internal {

// Parses the request a unary or server-streaming call opened with; on
// failure the call is finished with INVALID_ARGUMENT and false returned.
template <typename Request>
bool ParseRequest(ServerCall* call, Request* request) {
  if (ParseFromBuffer(call->request(), request)) return true;
  call->Finish(
      absl::InvalidArgumentError("request payload does not parse as " + request->GetTypeName()),
      nullptr);
  return false;
}

template <typename Request, typename Response>
class ServerStreamingMethod final : public MethodHandler {
 public:
  explicit ServerStreamingMethod(ServerStreamingHandler<Request, Response> fn)
      : fn_(std::move(fn)) {}
  bool streaming() const override { return true; }
  bool opens_with_request() const override { return true; }
  net::Task<void> Run(ServerCall* call) override {
    Request request;
    if (!ParseRequest(call, &request)) co_return;
    ServerWriter<Response> writer(call);
    absl::Status status = co_await fn_(call->context(), request, writer);
    call->Finish(status, nullptr);
  }

 private:
  ServerStreamingHandler<Request, Response> fn_;
};

template <typename Request, typename Response>
class ClientStreamingMethod final : public MethodHandler {
 public:
  explicit ClientStreamingMethod(ClientStreamingHandler<Request, Response> fn)
      : fn_(std::move(fn)) {}
  bool streaming() const override { return true; }
  net::Task<void> Run(ServerCall* call) override {
    ServerReader<Request> reader(call);
    Response response;
    absl::Status status = co_await fn_(call->context(), reader, &response);
    if (!call->stream_error().ok()) status = call->stream_error();
    call->Finish(status, &response);
  }

 private:
  ClientStreamingHandler<Request, Response> fn_;
};

template <typename Request, typename Response>
class BidiStreamingMethod final : public MethodHandler {
 public:
  explicit BidiStreamingMethod(BidiStreamingHandler<Request, Response> fn) : fn_(std::move(fn)) {}
  bool streaming() const override { return true; }
  net::Task<void> Run(ServerCall* call) override {
    ServerReaderWriter<Request, Response> stream(call);
    absl::Status status = co_await fn_(call->context(), stream);
    if (!call->stream_error().ok()) status = call->stream_error();
    call->Finish(status, nullptr);
  }

 private:
  BidiStreamingHandler<Request, Response> fn_;
};

template <typename Request, typename Response>
class UnaryMethod final : public MethodHandler {
 public:
  explicit UnaryMethod(UnaryHandler<Request, Response> fn) : fn_(std::move(fn)) {}
  net::Task<void> Run(ServerCall* call) override {
    Request request;
    if (!ParseRequest(call, &request)) co_return;
    Response response;
    absl::Status status = co_await fn_(call->context(), request, &response);
    call->Finish(status, &response);
  }

 private:
  UnaryHandler<Request, Response> fn_;
};

template <typename Response>
class UnaryBytesMethod final : public MethodHandler {
 public:
  explicit UnaryBytesMethod(UnaryBytesHandler<Response> fn) : fn_(std::move(fn)) {}
  net::Task<void> Run(ServerCall* call) override {
    Response response;
    // The call, and its request, outlive the handler.
    absl::Status status = co_await fn_(call->context(), call->request(), &response);
    call->Finish(status, &response);
  }

 private:
  UnaryBytesHandler<Response> fn_;
};

class GenericMethod final : public MethodHandler {
 public:
  explicit GenericMethod(GenericHandler fn) : fn_(std::move(fn)) {}
  net::Task<void> Run(ServerCall* call) override;

 private:
  GenericHandler fn_;
};

class GenericStreamMethod final : public MethodHandler {
 public:
  explicit GenericStreamMethod(GenericStreamHandler fn) : fn_(std::move(fn)) {}
  bool streaming() const override { return true; }
  net::Task<void> Run(ServerCall* call) override { co_await fn_(*call); }

 private:
  GenericStreamHandler fn_;
};

}  // namespace internal

class Service {
 public:
  // `name` is the protobuf full name: "package.Service".
  explicit Service(std::string name) : name_(std::move(name)) {}
  virtual ~Service() = default;
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;
  const std::string& name() const { return name_; }

 protected:
  template <typename Request, typename Response>
  void AddUnary(std::string method, UnaryHandler<Request, Response> fn) {
    methods_.emplace_back(
        std::move(method),
        std::make_unique<internal::UnaryMethod<Request, Response>>(std::move(fn)));
  }
  // Server streaming: one request, any number of responses (Write), then
  // the status the handler returns.
  template <typename Request, typename Response>
  void AddServerStreaming(std::string method, ServerStreamingHandler<Request, Response> fn) {
    methods_.emplace_back(
        std::move(method),
        std::make_unique<internal::ServerStreamingMethod<Request, Response>>(std::move(fn)));
  }
  // Client streaming: requests until the client half-closes (Read returns
  // false), then one response.
  template <typename Request, typename Response>
  void AddClientStreaming(std::string method, ClientStreamingHandler<Request, Response> fn) {
    methods_.emplace_back(
        std::move(method),
        std::make_unique<internal::ClientStreamingMethod<Request, Response>>(std::move(fn)));
  }
  // Bidirectional: reads and writes independently (a handler may write from
  // a coroutine of its own while it reads); the call ends when it returns.
  template <typename Request, typename Response>
  void AddBidiStreaming(std::string method, BidiStreamingHandler<Request, Response> fn) {
    methods_.emplace_back(
        std::move(method),
        std::make_unique<internal::BidiStreamingMethod<Request, Response>>(std::move(fn)));
  }
  // Serves unary `method` with a handler given the request's serialized
  // bytes (UnaryBytesHandler) instead of a parsed Request; the response is
  // typed as usual, and limits, interceptors and metrics are unchanged. It
  // replaces the method's handler when one is registered (a generated
  // <Service>Server's constructor registers every method, so a subclass
  // calls this in its own constructor), else adds it. The handler checks
  // the bytes itself: a request that does not parse is its error to report.
  // REQUIRES: before Server::AddService(this).
  template <typename Response>
  void SetUnaryBytesHandler(std::string method, UnaryBytesHandler<Response> fn) {
    auto handler = std::make_unique<internal::UnaryBytesMethod<Response>>(std::move(fn));
    for (auto& [name, existing] : methods_) {
      if (name == method) {
        existing = std::move(handler);
        return;
      }
    }
    methods_.emplace_back(std::move(method), std::move(handler));
  }
  // Raw bytes in and out: proxies and tools that carry messages they do not
  // parse.
  void AddGeneric(std::string method, GenericHandler fn) {
    methods_.emplace_back(std::move(method),
                          std::make_unique<internal::GenericMethod>(std::move(fn)));
  }
  void AddGenericStream(std::string method, GenericStreamHandler fn) {
    methods_.emplace_back(std::move(method),
                          std::make_unique<internal::GenericStreamMethod>(std::move(fn)));
  }

 private:
  friend class Server;
  std::string name_;
  std::vector<std::pair<std::string, std::unique_ptr<MethodHandler>>> methods_;
};

// Code that runs around every call (authentication, logging, tagging):
// Before in the order added, After in reverse. Both run on the call's loop
// and must not block.
class ServerInterceptor {
 public:
  virtual ~ServerInterceptor() = default;
  // A non-OK status answers the call with it; the handler does not run.
  virtual absl::Status Before(ServerContext& context) { return absl::OkStatus(); }
  // After the handler (or a refusal by Before): the call's status and how
  // long it took. Runs for every call whose Before ran.
  virtual void After(ServerContext& context, absl::StatusCode code, Clock::duration elapsed) {}
};

// TLS on the server's port (docs/rpc-tls.md). Both protocols run inside it:
// after the handshake the first bytes tell Capstan frames from gRPC as in
// clear text; ALPN offers "h2" (gRPC clients require it) and "capstan-rpc"
// (what rpc::Channel asks for).
struct ServerTlsOptions {
  // PEM certificate (then its chain) and private key; both or neither.
  // Empty: the port is clear text.
  std::string cert_file;
  std::string key_file;
  // PEM bundle of the CAs whose client certificates are accepted; empty:
  // no client certificate is asked for (ServerContext::peer_identity() is
  // then always empty).
  std::string client_ca_file;
  // mTLS: a client without a certificate signed by client_ca_file is
  // refused during the handshake. Off: one is asked for, verified when
  // sent, and a client may send none. Needs client_ca_file.
  bool require_client_cert = false;
  // The three files are looked at again at most this often (at the next
  // accepted connection); when they changed, new connections get the new
  // certificate and open ones keep theirs. A rebuild that fails (a
  // half-written file) keeps the previous certificate.
  std::chrono::milliseconds reload_check = std::chrono::seconds(1);
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 1;
  net::IoBackendKind backend = net::IoBackendKind::kAuto;
  // Null: Start runs a LoopGroup of its own (`threads` loops on `backend`).
  // Else the server listens on every loop of this caller-owned group
  // (`threads` and `backend` are then the group's): it must outlive the
  // server; Shutdown closes the server's listeners and connections, ends its
  // calls and waits for every coroutine of the server on the loops, but
  // leaves the group running (the caller stops it after every server on
  // it). The admin endpoint keeps a loop of its own (/status reads the
  // serving loops).
  net::LoopGroup* group = nullptr;
  // Largest frame accepted; a bigger one closes the connection.
  size_t max_frame_size = kDefaultMaxFrameSize;
  // Thread names are "<name>-<i>".
  std::string name = "rpc";
  // Each loop limits each method's concurrent calls adaptively
  // (mesh/concurrency_limiter.h); calls over the limit are answered
  // RESOURCE_EXHAUSTED at once, unprocessed, so clients retry elsewhere.
  bool adaptive_concurrency_limit = true;
  mesh::AdaptiveLimiterOptions adaptive_limit;
  // Hard caps on concurrent calls by full method name
  // ("package.Service/Method"), across all loops.
  std::map<std::string, int> max_concurrency;
  // Where per-method metrics go; null: a registry of the server's own.
  metrics::Registry* metrics = nullptr;
  // "host:port" to serve GET /metrics (Prometheus) and /status on; empty:
  // no admin endpoint.
  std::string admin_address;
  // gRPC clients (HTTP/2 with prior knowledge, "h2c") on the same port:
  // a connection whose first bytes are HTTP/2's preface is served by
  // net::GrpcServer, every method at "/package.Service/Method".
  bool grpc = true;
  // The gRPC health checking service (grpc.health.v1.Health), over both
  // protocols: SERVING for "" and each service, NOT_SERVING once Shutdown
  // begins.
  bool health_service = true;
  // gRPC server reflection (grpc.reflection.v1alpha and v1): lists the
  // services and sends the file descriptors linked into the binary.
  bool reflection_service = true;
  // Over gRPC (whose HTTP/2 returns flow-control credit as bytes arrive),
  // a streaming call whose client gets this far ahead of its handler's
  // reads ends RESOURCE_EXHAUSTED.
  size_t grpc_max_queued_bytes = 16 << 20;

  // ---- TLS (server_tls.cc)
  ServerTlsOptions tls;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // REQUIRES: before Start; the service outlives the server.
  void AddService(Service* service);
  // REQUIRES: before Start.
  void AddInterceptor(std::shared_ptr<ServerInterceptor> interceptor) {
    interceptors_.push_back(std::move(interceptor));
  }
  absl::Status Start();
  int port() const { return port_; }
  // The admin endpoint's port (0 when there is none).
  int admin_port() const;
  metrics::Registry& metrics() { return *metrics_; }
  // The /status page: services and methods (calls, errors, in flight,
  // limits, latency), connections and their calls in flight.
  std::string StatusText();
  net::IoBackendKind backend() const { return group_->backend(); }
  // Shutdown has begun (the health service answers NOT_SERVING).
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  // The names of the services served ("package.Service"), in order added.
  const std::vector<std::string>& service_names() const { return service_names_; }

  // Stops accepting, tells every client GOAWAY, waits up to `grace` for the
  // calls in flight to finish, then closes every connection and stops the
  // loops (on a caller's group: waits for the cancelled calls' handlers to
  // return instead, however long they take, and leaves the loops running).
  // Idempotent. REQUIRES: not called on one of the server's loops.
  void Shutdown(Clock::duration grace = std::chrono::seconds(5));

  struct Stats {
    // Capstan and gRPC connections alike.
    int64_t connections = 0;
    int64_t calls_in_flight = 0;
    int64_t calls_started = 0;
    int64_t protocol_errors = 0;
    // Calls refused by a concurrency limit (hard or adaptive).
    int64_t calls_shed = 0;
    // Accepted connections whose TLS handshake failed (a client without
    // an accepted certificate, no common protocol or version).
    int64_t tls_handshake_failures = 0;
  };
  Stats stats() const;

 private:
  friend class internal::GrpcCallBridge;
  struct LoopState;
  struct Method;
  void RegisterMetrics();
  // What every call passes before it runs, whatever its protocol: draining,
  // an expired deadline, the hard and adaptive limits. OK (with *limiter
  // the adaptive limiter to release, or null) or the status to answer.
  absl::Status Admit(LoopState* state, Method* m, bool deadline_passed,
                     mesh::AdaptiveConcurrencyLimiter** limiter);
  // Counts the admitted call and runs it (inline until it first waits).
  void Launch(LoopState* state, std::unique_ptr<ServerCall> call, Method* m,
              mesh::AdaptiveConcurrencyLimiter* limiter);
  LoopState* StateOf(net::EventLoop* loop);
  // server_grpc.cc: the gRPC side (methods, built-in services, handover).
  void AddBuiltinServices();
  void SetUpGrpc();
  bool TakesGrpc(net::Socket& socket) const;
  void ServeGrpc(std::shared_ptr<net::Socket> socket);
  void ShutdownGrpc(Clock::time_point deadline);
  // server_tls.cc: checks ServerOptions::tls and loads the certificate.
  absl::Status SetUpTls();
  // Starts TLS on an accepted connection (when on); false: the connection
  // could not start it and was closed.
  bool StartTls(net::Socket& socket);
  // Waits for the handshake; false (counted, the socket closed) when it
  // failed.
  net::Task<bool> FinishHandshake(net::Socket& socket);
  void Reject(const std::shared_ptr<ServerCall::Connection>& conn, uint32_t stream_id,
              absl::StatusCode code, std::string_view message);
  net::Task<void> AcceptLoop(LoopState* state);
  net::Task<void> ServeConnection(LoopState* state, std::shared_ptr<ServerCall::Connection> conn);
  void HandleRequest(LoopState* state, const std::shared_ptr<ServerCall::Connection>& conn,
                     Frame& frame);
  net::Task<void> RunCall(std::unique_ptr<ServerCall> call, Method* method,
                          mesh::AdaptiveConcurrencyLimiter* limiter);
  void CallDone();
  void TaskEnded();
  // On a caller's group: waits until every call and coroutine of the server
  // has ended, then drops the per-loop state on its loops.
  void AwaitQuiescence();

  ServerOptions options_;
  std::vector<std::unique_ptr<Method>> method_list_;
  absl::flat_hash_map<std::string, Method*> methods_;
  std::vector<std::shared_ptr<ServerInterceptor>> interceptors_;
  std::unique_ptr<metrics::Registry> own_metrics_;
  metrics::Registry* metrics_ = nullptr;
  std::unique_ptr<net::HttpServer> admin_;
  std::unique_ptr<net::GrpcServer> grpc_;
  std::vector<std::unique_ptr<Service>> builtin_services_;
  std::vector<std::string> service_names_;
  std::atomic<bool> draining_{false};
  Clock::time_point started_at_{};
  // The loops served on: own_group_ (started by Start) or options_.group.
  std::unique_ptr<net::LoopGroup> own_group_;
  net::LoopGroup* group_ = nullptr;
  std::vector<std::unique_ptr<LoopState>> loops_;
  int port_ = 0;
  bool started_ = false;
  bool shut_down_ = false;

  std::atomic<int64_t> connections_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> calls_started_{0};
  std::atomic<int64_t> protocol_errors_{0};
  std::atomic<int64_t> calls_shed_{0};
  // Accept loops and Capstan-protocol connections still running (on a
  // caller's group, Shutdown waits for none).
  std::atomic<int> tasks_{0};
  // TLS: the server context, rebuilt when its files change; null in clear
  // text.
  std::shared_ptr<net::TlsReloader> tls_;
  std::atomic<int64_t> tls_handshake_failures_{0};
  // Shutdown waits here for in_flight_ (and tasks_) to reach zero.
  std::mutex drain_mu_;
  std::condition_variable drained_;
};

}  // namespace capstan::rpc
