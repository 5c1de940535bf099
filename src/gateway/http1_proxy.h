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
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/proxy.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

// An HTTP/1.1 request that asked to continue as HTTP/2 (`Upgrade: h2c`,
// RFC 7540 §3.2) and was answered 101: the HTTP/2 connection's stream 1.
struct H2cUpgrade {
  std::string settings;  // the HTTP2-Settings field (base64url)
  bool head_request = false;
  // :method, :path, :authority, then the request's end-to-end fields
  // (lowercase names).
  std::vector<std::pair<std::string, std::string>> fields;
};

// Serves HTTP/1.1 requests on `socket` until the client or the gateway ends
// the connection. Does not close the socket. When the listener speaks h2c
// and a request without a body asks to upgrade, answers 101, fills
// `*upgrade` and returns: the caller goes on with ServeHttp2. When a
// clear-text connection has been idle for `limits.idle_park_after`, releases
// the socket's fd into `*parked_fd` and returns: the caller parks it.
net::Task<void> ServeHttp1(DownstreamContext& context, std::shared_ptr<net::Socket> socket,
                           std::optional<H2cUpgrade>* upgrade, int* parked_fd);

}  // namespace capstan::gateway
