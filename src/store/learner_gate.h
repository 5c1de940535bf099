// Learners refuse client requests, as etcd's do: a learner's state may lag
// and it takes no part in quorum, so it serves only what etcd's
// v3rpc interceptors let through on a learner — Maintenance.Status and a
// serializable Range. Everything else (writes, linearizable reads, Watch,
// LeaseKeepAlive and every other stream, the Cluster and Auth APIs) ends
// UNAVAILABLE "etcdserver: rpc not supported for learner", which etcd's
// clients take as a cue to try another endpoint.
//
// Thread-safety: the installed handlers run on the client loops; the check
// is one atomic load (Store::IsLearner) unless the member is a learner.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "net/grpc_server.h"

namespace capstan::store {

class Store;

absl::Status ErrRpcNotSupportedForLearner();
// Whether a learner may serve `path` with `request` (null for a stream).
bool LearnerMayServe(std::string_view path, net::Buffer* request);
// Wraps every method already added to `server` with the learner check.
// REQUIRES: after every etcd API method is added, before the server listens.
void InstallLearnerGate(Store* store, net::GrpcServer* server);

}  // namespace capstan::store
