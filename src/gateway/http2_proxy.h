// The HTTP/2 downstream: a server Http2Session per client connection (h2
// by ALPN under TLS, or prior knowledge in clear text); each stream is one
// request, handed to the protocol-neutral proxy (proxy.h) by a coroutine of
// its own, so streams of one connection are forwarded concurrently.
//
// Request bodies arrive as DATA slices of the socket's input (no copy) and
// are returned to the client's flow-control window only as the upstream
// takes them, so a slow upstream holds a fast client back; response bodies
// wait for the client's window the same way.
//
// Thread-safety: everything runs on the connection's loop.
#pragma once

#include <memory>

#include "gateway/http1_proxy.h"
#include "gateway/proxy.h"
#include "net/socket.h"
#include "net/task.h"

namespace capstan::gateway {

// Serves HTTP/2 on `socket` until the connection ends, then waits for every
// stream's handler to finish. Does not close the socket.
// `upgrade`: the connection began as HTTP/1.1 and was switched (h2c
// upgrade); its request is stream 1.
net::Task<void> ServeHttp2(DownstreamContext& context, std::shared_ptr<net::Socket> socket,
                           const H2cUpgrade* upgrade = nullptr);

}  // namespace capstan::gateway
