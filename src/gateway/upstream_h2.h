// Forwarding over HTTP/2 to an upstream (clusters with `protocol: h2`): one
// multiplexed client session per loop and endpoint, one stream per
// request. Request and response bodies flow at the same time, so gRPC
// streaming calls (etcd's Watch, bidirectional streams) pass through, with
// trailers (grpc-status) both ways.
//
// Thread-safety: the loop of the downstream connection.
#pragma once

#include <memory>
#include <string>

#include "gateway/cluster.h"
#include "gateway/proxy.h"
#include "gateway/router.h"
#include "net/http1.h"
#include "net/task.h"

namespace capstan::gateway {

// One attempt on `endpoint`. `fields` are the request's regular fields,
// already edited. kRetry: the stream was never opened (connect failure, a
// GOAWAY), so another attempt is safe.
net::Task<Outcome> ForwardHttp2(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                                Cluster& cluster, std::shared_ptr<PooledEndpoint> endpoint,
                                const std::string& method, const std::string& target,
                                const std::string& authority, net::http1::HeaderFields& fields,
                                mesh::AttemptVerdict* verdict);

}  // namespace capstan::gateway
