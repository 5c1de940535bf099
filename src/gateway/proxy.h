// The protocol-neutral middle of the gateway: a request arrives from a
// downstream (an HTTP/1.1 connection or an HTTP/2 stream), is routed, and is
// forwarded to a cluster's endpoint over HTTP/1.1 or HTTP/2; the response
// goes back the same way. The downstream side is an interface
// (DownstreamExchange) so both client protocols share one forwarding path.
//
// Thread-safety: everything runs on the loop of the downstream connection.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/gateway.h"
#include "gateway/stats.h"
#include "net/buffer.h"
#include "net/http1.h"
#include "net/task.h"

namespace capstan::gateway {

class ExperimentRouting;

// What a downstream connection's handler needs from its gateway and loop.
struct DownstreamContext {
  net::EventLoop* loop;
  int loop_index;
  // The loop's current snapshot: read at each request's start.
  const std::shared_ptr<const Snapshot>* snapshot;
  Gateway::Counters* counters;
  const std::atomic<bool>* draining;
  std::string client_address;
  bool tls;
  size_t listener_index;
  // How the gateway reaches the connection while it drains.
  ConnectionControl* control;
  // Per-loop state (upstream HTTP/2 sessions are shared by the loop's
  // connections).
  Gateway::LoopState* loop_state;
  AccessLog* access_log;  // null: none
  // Routes that split by experiment assign through it; null: none
  // configured (such routes then use their default cluster).
  ExperimentRouting* experiments = nullptr;
};

// The request as every protocol presents it.
struct ProxyRequest {
  std::string_view method;
  std::string_view authority;                  // Host or :authority
  std::string_view path;                       // without the query
  std::string_view query;                      // after '?'
  bool asterisk = false;                       // OPTIONS *
  net::http1::HeaderFields* fields = nullptr;  // regular fields, editable
  bool has_body = false;
  // HTTP/1.1: the body's length when known (else chunked upstream).
  std::optional<uint64_t> content_length;
  bool keep_alive = true;  // the client keeps the connection after this
  bool expect_continue = false;
  bool http10 = false;   // the client speaks HTTP/1.0
  bool http2 = false;    // the client speaks HTTP/2
  bool grpc = false;     // content-type application/grpc...
  bool upgrade = false;  // HTTP/1.1 Upgrade (WebSocket): a tunnel after 101
};

struct BodyEvent {
  enum Type : uint8_t { kPiece, kEnd, kError } type = kEnd;
  net::Buffer piece;
  // kEnd: the request's trailers, if any.
  const net::http1::HeaderFields* trailers = nullptr;
};

// The client side of one exchange.
class DownstreamExchange {
 public:
  virtual ~DownstreamExchange() = default;
  virtual ProxyRequest& request() = 0;
  // The next piece of the request body (kEnd when it is over, at once for
  // a request without one; kError: the client went away or sent a bad
  // body — an answer has been written if one could be).
  virtual net::Task<BodyEvent> NextBody() = 0;
  // "100 Continue" for a client that waits for it before sending its body.
  virtual void SendContinue() = 0;
  // The response head (fields already edited); `has_body`: a body follows.
  // Returns false if the client is gone.
  virtual bool SendHead(int status, net::http1::HeaderFields& fields, bool has_body,
                        std::optional<uint64_t> content_length) = 0;
  // A body piece; waits while the client is slow. False if it is gone.
  virtual net::Task<bool> SendBody(net::Buffer piece) = 0;
  // Ends the response (with trailers, if any).
  virtual void End(const net::http1::HeaderFields* trailers) = 0;
  // Abandons a response already started (the client sees a cut/reset).
  virtual void Abort() = 0;
  // HTTP/1.1: the client's socket, for a tunnel after 101 Switching
  // Protocols; null for HTTP/2 streams.
  virtual net::Socket* TunnelSocket() { return nullptr; }
  // A whole response of the gateway's own.
  virtual void SendLocal(int status, std::string_view body, std::string_view extra_header_name = {},
                         std::string_view extra_header_value = {}) = 0;
  bool response_started = false;
  int status = 0;
  uint64_t bytes_sent = 0;  // response body bytes handed to the client
  std::string upstream;     // the endpoint that answered, for the log
  std::string request_id;
  // Fields added to the response head from upstream (after the route's
  // response_headers edits), e.g. an experiment's Set-Cookie.
  std::vector<std::pair<std::string, std::string>> extra_response_fields;
  // Set by the forwarding code while it waits on an upstream: the client
  // side calls it when the client goes away, so the wait ends at once.
  std::function<void()> cancel_upstream;
};

// How one attempt to forward ended. kRetry: nothing of the request body was
// consumed and nothing received, so another attempt is safe.
enum class Outcome { kDone, kRetry, kFailed };

// The edits every upstream response head gets before it goes to the client:
// the route's response_headers, Via, the exchange's extra fields.
void EditResponseHead(const DownstreamContext& ctx, const DownstreamExchange& x, const Route& route,
                      net::http1::HeaderFields* fields);

// Routes and answers one request. Returns whether the downstream may carry
// another (HTTP/1.1 keep-alive; always true for an HTTP/2 stream unless the
// connection must close).
net::Task<bool> HandleRequest(DownstreamContext& ctx, DownstreamExchange& x);

}  // namespace capstan::gateway
