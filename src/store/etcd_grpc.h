// The etcd v3 API on Capstan's own gRPC server (net::GrpcServer).
//
// Hot methods are served natively: the request is parsed, validated and
// answered on the loop that owns the connection, or proposed and answered
// from the applier through the loop, with no libgrpc++ threads in between.
// Every other method goes through a bridge to the libgrpc++ services
// (services.h) over an in-process channel, so the whole API stays on one
// port while methods move over one by one.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "net/grpc_server.h"
#include "net/worker_pool.h"
#include "store/store.h"

namespace capstan::store {

// Registers the native handlers of the etcd API on `server`; blocking work
// (disk scans, checkpoints) runs on `pool`, which must outlive the calls.
void AddNativeEtcdMethods(Store* store, net::GrpcServer* server, net::WorkerPool* pool);

// Makes `server` hand every method it does not serve itself to `channel`
// (the libgrpc++ server's in-process channel): messages, half-close,
// cancellation and status pass through unchanged.
void BridgeUnservedMethods(std::shared_ptr<grpc::Channel> channel, net::GrpcServer* server);

}  // namespace capstan::store
