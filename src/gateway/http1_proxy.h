// The HTTP/1.1 downstream: one coroutine per client connection reads
// requests with the strict codec (net/http1.h) and hands each to the
// protocol-neutral proxy (proxy.h); responses are framed back as the client
// needs (Content-Length when known, else chunked, or until close for
// HTTP/1.0). Pipelined requests are answered in order, one at a time.
//
// Answers of the gateway's own at this layer: 400 for ambiguous or bad
// framing (then close: never forwarded), 413/414/431 for the listener's
// limits, 505 for an unknown HTTP version; a head not complete within
// request_header_timeout closes the connection (slowloris), as does an
// idle keep-alive connection after idle_timeout.
//
// Thread-safety: everything runs on the connection's loop.
#pragma once

#include <memory>

#include "gateway/proxy.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

// Serves HTTP/1.1 requests on `socket` until the client or the gateway ends
// the connection. Does not close the socket.
net::Task<void> ServeHttp1(DownstreamContext& context, std::shared_ptr<net::Socket> socket);

}  // namespace capstan::gateway
