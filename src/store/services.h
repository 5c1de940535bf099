// Helpers for the store's libgrpc++ callback services: only the peer
// service (peer.cc) is one; the etcd API is served natively (etcd_grpc.h).
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

}  // namespace capstan::store
