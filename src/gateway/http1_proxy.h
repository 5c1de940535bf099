// The HTTP/1.1 side of the gateway: one coroutine per downstream
// connection reads requests with the strict codec (net/http1.h), routes
// each, and forwards it to an upstream over a pooled HTTP/1.1 connection,
// streaming bodies both ways without copying them.
//
// Per request: parse head -> route (404 / redirect / direct response
// answered here) -> pick an endpoint (cluster balancer, open breakers
// skipped) -> take an idle connection or connect -> write the edited head,
// then the body as it arrives -> read the response head, edit it, write it
// -> stream the body (backpressure: a slow client holds the upstream read)
// -> the connection goes back to the pool when both sides kept it alive.
//
// Answers of the gateway's own (see docs/gateway.md): 400 ambiguous or bad
// framing (then close), 404 no route, 408 request head not complete in
// time, 413/414/431 limits, 502 upstream unreachable / reset / bad
// response, 503 no endpoint or a cluster limit (x-capstan-overflow says
// which), 504 the route's timeout, 505 unknown HTTP version.
//
// Thread-safety: everything here runs on the connection's loop.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "gateway/gateway.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

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
  // Set while the connection waits for a request's first byte (a draining
  // gateway closes such connections at once).
  std::shared_ptr<bool> idle;
};

// Serves HTTP/1.1 requests on `socket` until the client or the gateway ends
// the connection. Does not close the socket.
net::Task<void> ServeHttp1(DownstreamContext& context, std::shared_ptr<net::Socket> socket);

}  // namespace capstan::gateway
