// Runs the same request against etcd and capstan and compares the answers,
// ignoring only what legitimately differs (cluster and member IDs, raft term).
#pragma once

#include <memory>
#include <string>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/v3electionpb/v3election.grpc.pb.h"
#include "etcd/v3lockpb/v3lock.grpc.pb.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "harness.h"

namespace capstan::e2e {

struct Stubs {
  explicit Stubs(const std::string& endpoint);
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
  std::unique_ptr<v3lockpb::Lock::Stub> lock;
  std::unique_ptr<v3electionpb::Election::Stub> election;
};

// Clears cluster_id, member_id and raft_term in every ResponseHeader inside msg.
void NormalizeHeaders(google::protobuf::Message* msg);

// "OK" or "CODE: message".
std::string StatusText(const grpc::Status& st);

// A readable difference between two messages, empty when equal.
std::string Diff(const google::protobuf::Message& a, const google::protobuf::Message& b);

}  // namespace capstan::e2e
