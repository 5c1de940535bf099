// The etcd v3 gRPC services of one store member served by libgrpc++ (KV and
// Watch are served natively: etcd_grpc.h; these are reached through its
// bridge). Each
// is a thin adapter:
// validate the request, then either read through the Applier or Propose a
// log entry and finish the RPC when it is applied.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "store/store.h"

namespace capstan::store {

inline grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

// Proposes `entry`; when it is applied, moves the result into `resp`, fills
// the header and finishes the RPC (with the error, if any).
template <typename Resp>
void ProposeAndFinish(Store* store, LogEntry entry, grpc::ServerUnaryReactor* reactor, Resp* resp) {
  store->Propose(std::move(entry),
                 [store, reactor, resp](absl::Status st, google::protobuf::Message* msg) {
                   if (st.ok() && msg != nullptr) {
                     resp->Swap(static_cast<Resp*>(msg));
                     store->FillHeader(resp->mutable_header());
                   }
                   reactor->Finish(ToGrpc(st));
                 });
}

// Finishes a unary RPC at once with `st`.
inline grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx,
                                           const absl::Status& st) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

// Lease TTL as this member's lessor sees it (authoritative on the leader).
absl::Status FillTimeToLive(Store* store, const etcdserverpb::LeaseTimeToLiveRequest& req,
                            etcdserverpb::LeaseTimeToLiveResponse* resp);

std::unique_ptr<grpc::Service> NewLockService(Store* store);
std::unique_ptr<grpc::Service> NewElectionService(Store* store);

}  // namespace capstan::store
