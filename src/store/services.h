// The etcd v3 gRPC services of one store member. Each is a thin adapter:
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

struct ClusterInfo {
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
};

std::unique_ptr<grpc::Service> NewKvService(Store* store);
std::unique_ptr<grpc::Service> NewWatchService(Store* store);
std::unique_ptr<grpc::Service> NewLeaseService(Store* store);
std::unique_ptr<grpc::Service> NewMaintenanceService(Store* store);
std::unique_ptr<grpc::Service> NewClusterService(Store* store, ClusterInfo info);
std::unique_ptr<grpc::Service> NewLockService(Store* store);
std::unique_ptr<grpc::Service> NewElectionService(Store* store);

}  // namespace capstan::store
