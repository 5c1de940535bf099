// Channel: the client side of one Capstan RPC endpoint, on one event loop.
// Calls made on the loop share one connection (multiplexed by stream id,
// answered in any order); the requests of one loop turn leave in one send.
// The connection opens on the first call and reopens after a failure (with
// a back-off during which calls fail fast with UNAVAILABLE, so a balancer
// can route around the endpoint).
//
// Deadlines: CallOptions::timeout bounds a call; CallOptions::parent (the
// ServerContext of the call being served) passes its deadline, trace
// context and cancellation on, so a chain of services shares one deadline.
//
//   auto channel = rpc::Channel::Create(loop, "127.0.0.1", port);
//   EchoStub stub(channel);                                // generated
//   absl::StatusOr<EchoResponse> r =
//       co_await stub.Echo(request, {.timeout = std::chrono::milliseconds(50)});
//
// Thread-safety: a Channel belongs to its loop; call it only there (from
// other threads, net::BlockOn). Create returns a shared_ptr: keep it while
// calls run. Balancing over many endpoints is
// mesh's job (src/mesh), built from one Channel per endpoint and loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "base/status.h"
#include "net/buffer.h"
#include "net/event_loop.h"
#include "net/task.h"
#include "rpc/protocol.h"
#include "rpc/serialization.h"
#include "rpc/server.h"

namespace capstan::net {
class Socket;
class TlsContext;
}  // namespace capstan::net

namespace capstan::rpc {

// Ends a call from outside before its answer (the losing copy of a hedged
// call, a caller that gave up): the call returns CANCELLED and the server is
// sent CANCEL. One canceller per call; it must outlive the call.
class CallCanceller {
 public:
  void Cancel() {
    cancelled_ = true;
    if (hook_) std::exchange(hook_, nullptr)();
  }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Channel;
  absl::AnyInvocable<void()> hook_;
  bool cancelled_ = false;
};

struct CallOptions {
  // Zero: no timeout of the call's own (a parent's deadline still applies).
  Clock::duration timeout = Clock::duration::zero();
  // The call being served, whose deadline, trace context and cancellation
  // this outgoing call inherits. Read when the call starts, before its
  // first wait; it need not outlive the call.
  const ServerContext* parent = nullptr;
  MetadataList metadata;
  CallCanceller* canceller = nullptr;
  // Balanced channels only. The method has no effect beyond its answer
  // (a read, an idempotent write): a call that failed with UNAVAILABLE
  // after it was sent may be retried, as its outcome does not matter.
  bool idempotent = false;
  // Balanced channels only: the request's key for consistent hashing
  // (mesh::HashKey(user_id)), used by the "maglev" balancer.
  uint64_t hash = 0;
};

// TLS to the server (docs/rpc-tls.md): rpc::Server with ServerOptions::tls,
// or anything else speaking Capstan's protocol inside TLS.
struct ChannelTlsOptions {
  bool enabled = false;
  // PEM bundle of the CAs the server's certificate must chain to; empty:
  // the system's roots.
  std::string ca_file;
  // This client's certificate and key (PEM), for servers that require one
  // (ServerTlsOptions::require_client_cert); both or neither.
  std::string cert_file;
  std::string key_file;
  // Sent as SNI and verified against the server's certificate; empty: the
  // host the channel connects to (an IP address is then matched against
  // the certificate's IP entries).
  std::string server_name;
  // Off: encrypt but accept any server certificate (tests, --auto-tls
  // style peers). Never off where the network is not trusted.
  bool verify = true;
  // The client context built from the fields above, to share between
  // channels (BalancedChannel builds one for all its endpoints). Null: the
  // channel builds its own at its first connect. Files are read when it is
  // built: a renewed client certificate needs a new channel.
  std::shared_ptr<const net::TlsContext> context;
};

// Checks `options` (naming the field at fault) and builds the client
// context a channel's TLS connections use.
absl::StatusOr<std::shared_ptr<const net::TlsContext>> NewChannelTlsContext(
    const ChannelTlsOptions& options);

struct ChannelOptions {
  Clock::duration connect_timeout = std::chrono::seconds(3);
  // After a failed connect, calls fail fast for this long (doubling up to
  // max_backoff while failures continue).
  Clock::duration initial_backoff = std::chrono::milliseconds(100);
  Clock::duration max_backoff = std::chrono::seconds(5);
  size_t max_frame_size = kDefaultMaxFrameSize;
  // Sent as the "caller" metadata entry when not empty.
  std::string caller;

  // ---- TLS
  ChannelTlsOptions tls;
};

// What a call learned besides its message.
struct CallResult {
  absl::Status status;
  net::Buffer payload;
  // True when the server cannot have run the call (connection not
  // established, stream beyond GOAWAY, shed before running): safe to retry
  // for any method.
  bool not_processed = false;
};

// A call's result as a typed message (or its error status).
template <typename Response>
absl::StatusOr<Response> ParseResponse(CallResult result) {
  if (!result.status.ok()) return std::move(result.status);
  Response response;
  if (!ParseFromBuffer(result.payload, &response)) {
    return absl::InternalError("response payload does not parse as " + response.GetTypeName());
  }
  return response;
}

class Channel;

// A streaming call on a Channel, in raw bytes (the typed faces below wrap
// it). Open one with Channel::OpenStream. Reads and writes may wait in two
// coroutines at once (one of each); everything runs on the channel's loop.
//
// The call ends when the server answers (its status is Finish's), when the
// deadline passes, when it is cancelled, or when the connection fails; then
// Write returns false, and Read returns what arrived before and then false.
class ClientStream {
 public:
  // Cancels the call (the server is sent CANCEL) if it has not ended.
  ~ClientStream();
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;

  // Sends one message of `size` bytes written by `write`, after waiting for
  // flow-control credit; false when the call has ended or CloseSend was
  // called.
  net::Task<bool> WriteWith(size_t size, absl::FunctionRef<void(char*)> write);
  net::Task<bool> WriteBytes(net::Buffer message);
  // Half-closes: the server learns no more messages follow.
  void CloseSend();
  // The server's next message; false when no more will come.
  net::Task<bool> ReadBytes(net::Buffer* message);
  // Half-closes (if not yet), then waits for the call's end: the status
  // and, for client streaming, the response in CallResult::payload.
  // Messages not read are dropped. Once per stream.
  net::Task<CallResult> Finish();
  // Ends the call with CANCELLED (the server is sent CANCEL).
  void Cancel();
  // Ends the call with `status` (the server is sent CANCEL).
  void Fail(absl::Status status);
  bool done() const;
  // A stream that ended before it was sent (for channels that failed to
  // open one on any endpoint).
  static std::unique_ptr<ClientStream> Unsent(CallResult result);

  template <typename Message>
  net::Task<bool> Write(const Message& message) {
    size_t size = message.ByteSizeLong();
    co_return co_await WriteWith(size, [&](char* dst) { SerializeTo(message, size, dst); });
  }
  // False as ReadBytes, and when a message does not parse (the call then
  // ends with INTERNAL).
  template <typename Message>
  net::Task<bool> Read(Message* message) {
    net::Buffer bytes;
    if (!co_await ReadBytes(&bytes)) co_return false;
    if (ParseFromBuffer(bytes, message)) co_return true;
    Fail(absl::InternalError("stream message does not parse as " + message->GetTypeName()));
    co_return false;
  }

 private:
  friend class Channel;
  struct State;
  explicit ClientStream(std::unique_ptr<State> state);
  // WriteWith and WriteBytes: waits for room, then sends what `write`
  // writes or `*payload` (moved, not copied) when given.
  net::Task<bool> WriteMessage(size_t size, absl::FunctionRef<void(char*)> write,
                               net::Buffer* payload = nullptr);
  std::unique_ptr<State> state_;
};

namespace internal {

// What the typed faces share: the stream, Cancel, and the raw stream for
// callers that need more.
class TypedClientStream {
 public:
  // Ends the call with CANCELLED (the server is sent CANCEL).
  void Cancel() { stream_->Cancel(); }
  ClientStream& stream() { return *stream_; }

 protected:
  explicit TypedClientStream(std::unique_ptr<ClientStream> stream) : stream_(std::move(stream)) {}
  net::Task<absl::Status> FinishStatus() {
    CallResult result = co_await stream_->Finish();
    co_return result.status;
  }
  std::unique_ptr<ClientStream> stream_;
};

}  // namespace internal

// Server streaming: read the responses, then Finish for the status.
template <typename Response>
class ClientReader : public internal::TypedClientStream {
 public:
  explicit ClientReader(std::unique_ptr<ClientStream> stream)
      : TypedClientStream(std::move(stream)) {}
  net::Task<bool> Read(Response* message) { return stream_->Read(message); }
  net::Task<absl::Status> Finish() { return FinishStatus(); }
};

// Client streaming: write the requests, then Finish for the one response.
template <typename Request, typename Response>
class ClientWriter : public internal::TypedClientStream {
 public:
  explicit ClientWriter(std::unique_ptr<ClientStream> stream)
      : TypedClientStream(std::move(stream)) {}
  net::Task<bool> Write(const Request& message) { return stream_->Write(message); }
  void CloseSend() { stream_->CloseSend(); }
  net::Task<absl::StatusOr<Response>> Finish() {
    co_return ParseResponse<Response>(co_await stream_->Finish());
  }
};

// Bidirectional: write and read independently, CloseSend when done
// writing, Finish for the status.
template <typename Request, typename Response>
class ClientReaderWriter : public internal::TypedClientStream {
 public:
  explicit ClientReaderWriter(std::unique_ptr<ClientStream> stream)
      : TypedClientStream(std::move(stream)) {}
  net::Task<bool> Write(const Request& message) { return stream_->Write(message); }
  void CloseSend() { stream_->CloseSend(); }
  net::Task<bool> Read(Response* message) { return stream_->Read(message); }
  net::Task<absl::Status> Finish() { return FinishStatus(); }
};

// The typed stream openers of a channel type with OpenStream (Channel,
// BalancedChannel), which generated clients call.
template <typename ChannelT>
class StreamOpeners {
 public:
  template <typename Request, typename Response>
  net::Task<ClientReader<Response>> OpenServerStream(std::string_view method,
                                                     const Request& request,
                                                     CallOptions options = {}) {
    net::Buffer bytes = SerializeToBuffer(request);
    co_return ClientReader<Response>(co_await self().OpenStream(method, options, &bytes));
  }
  template <typename Request, typename Response>
  net::Task<ClientWriter<Request, Response>> OpenClientStream(std::string_view method,
                                                              CallOptions options = {}) {
    co_return ClientWriter<Request, Response>(co_await self().OpenStream(method, options));
  }
  template <typename Request, typename Response>
  net::Task<ClientReaderWriter<Request, Response>> OpenBidiStream(std::string_view method,
                                                                  CallOptions options = {}) {
    co_return ClientReaderWriter<Request, Response>(co_await self().OpenStream(method, options));
  }

 private:
  ChannelT& self() { return static_cast<ChannelT&>(*this); }
};

class Channel : public std::enable_shared_from_this<Channel>, public StreamOpeners<Channel> {
 public:
  static std::shared_ptr<Channel> Create(net::EventLoop* loop, std::string host, int port,
                                         ChannelOptions options = {});
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  net::EventLoop* loop() const { return loop_; }
  const std::string& endpoint() const { return endpoint_; }
  // Calls sent and not yet answered.
  size_t in_flight() const;
  bool connected() const;

  // Raw bytes in and out (generic client for proxies and tools).
  net::Task<CallResult> CallBytes(std::string_view method, net::Buffer request,
                                  const CallOptions& options = {});

  // `request` is read when the call is awaited: it must live until then.
  template <typename Request, typename Response>
  net::Task<absl::StatusOr<Response>> Call(std::string_view method, const Request& request,
                                           CallOptions options = {}) {
    size_t size = request.ByteSizeLong();
    CallResult result =
        co_await Send(method, options, size, [&](char* dst) { SerializeTo(request, size, dst); });
    co_return ParseResponse<Response>(std::move(result));
  }

  // Opens a streaming call. With `request`, it is the call's only request
  // and the stream is half-closed at once (server streaming); without, the
  // caller writes. Never null: a call that could not be sent (no
  // connection, deadline already past) is a stream that has ended, and
  // Finish says why (with not_processed).
  net::Task<std::unique_ptr<ClientStream>> OpenStream(std::string_view method,
                                                      const CallOptions& options = {},
                                                      net::Buffer* request = nullptr);

  // Closes the connection; calls in flight end with CANCELLED.
  void Close();

  // Sends a request and waits for the answer: the payload (size bytes) is
  // `*payload` moved into the frame when given, else what write_payload
  // writes in place. The building block of Call and CallBytes.
  net::Task<CallResult> Send(std::string_view method, const CallOptions& options, size_t size,
                             absl::FunctionRef<void(char*)> write_payload,
                             net::Buffer* payload = nullptr);

 private:
  friend class ClientStream;
  struct Connection;
  struct PendingCall;
  struct Opened;
  Channel(net::EventLoop* loop, std::string host, int port, ChannelOptions options);
  // Everything up to and including the REQUEST frame: inherits from the
  // parent, checks the deadline, connects, picks the stream id. An error
  // means the call was not sent.
  net::Task<absl::StatusOr<Opened>> Open(std::string_view method, const CallOptions& options,
                                         uint8_t flags, size_t size,
                                         absl::FunctionRef<void(char*)> write_payload,
                                         net::Buffer* payload);
  net::Task<absl::Status> EnsureConnected(Clock::time_point deadline);
  // With TLS on: starts it on a new connection and waits for the handshake
  // until `give_up_at`; the error names TLS and the endpoint.
  net::Task<absl::Status> HandshakeTls(net::Socket& socket, Clock::time_point give_up_at);
  static net::Task<void> ReadLoop(std::weak_ptr<Channel> channel, std::shared_ptr<Connection> conn);
  static void FailAll(Connection& conn, const absl::Status& status, bool not_processed);
  void ConnectionEnded(Connection* conn);

  net::EventLoop* loop_;
  std::string host_;
  int port_;
  std::string endpoint_;
  ChannelOptions options_;
  std::shared_ptr<Connection> current_;
  bool connecting_ = false;
  std::vector<std::coroutine_handle<>> connect_waiters_;
  absl::Status last_connect_error_;
  Clock::time_point retry_after_{};
  Clock::duration backoff_{};
  bool closed_ = false;
  // ChannelOptions::tls.context, or the one built at the first connect.
  std::shared_ptr<const net::TlsContext> tls_context_;
};

}  // namespace capstan::rpc
