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
#include "store/store.h"

namespace capstan::store {

// Registers the native handlers of the etcd API on `server`; blocking work
// (disk scans, checkpoints) runs on `pool`, which must outlive the calls.
void AddNativeEtcdMethods(Store* store, net::GrpcServer* server, net::WorkerPool* pool);

}  // namespace capstan::store
