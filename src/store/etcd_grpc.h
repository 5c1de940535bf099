// The etcd v3 API on Capstan's own gRPC server (net::GrpcServer).
//
// Every method is served natively: the request is parsed, validated and
// answered on the loop that owns the connection, or proposed and answered
// from the applier through the loop, with no libgrpc++ threads in between.
// What blocks (a checkpoint, a scan of the database) runs on a WorkerPool;
// what waits (Lock, Campaign, Observe) is a coroutine on the loop.
#pragma once

#include <memory>

#include "net/grpc_server.h"
#include "net/worker_pool.h"
#include "store/auth_gate.h"
#include "store/store.h"

namespace capstan::store {

// Registers the native handlers of the etcd API on `server`, each behind
// the auth gate (auth_gate.h); blocking work (disk scans, checkpoints,
// bcrypt) runs on `pool`, which must outlive the calls. `peer_name` gives
// a call's verified client certificate Common Name (the user when the call
// has no token, as in etcd); null when the client port has no mTLS.
void AddNativeEtcdMethods(Store* store, net::GrpcServer* server, net::WorkerPool* pool,
                          PeerNameSource peer_name = nullptr);

}  // namespace capstan::store
