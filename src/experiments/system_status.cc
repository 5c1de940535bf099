#include "experiments/system_status.h"

#include <chrono>
#include <cstdio>
#include <memory>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace capstan::experiments {
namespace {

constexpr std::chrono::seconds kDeadline{2};

std::string HexId(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

std::string Target(const std::string& endpoint) {
  for (const char* scheme : {"http://", "https://"}) {
    std::string_view s(scheme);
    if (endpoint.starts_with(s)) return endpoint.substr(s.size());
  }
  return endpoint;
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
}

}  // namespace

Json StoreSystemStatus(const std::vector<std::string>& endpoints) {
  Json endpoint_rows = Json::array();
  Json members = Json::array();
  Json leader = nullptr;
  std::string members_error = "no store endpoint answered";
  bool have_members = false;
  for (const std::string& endpoint : endpoints) {
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateChannel(Target(endpoint), grpc::InsecureChannelCredentials());
    Json row = {{"endpoint", endpoint}};
    {
      auto stub = etcdserverpb::Maintenance::NewStub(channel);
      grpc::ClientContext context;
      SetDeadline(&context);
      etcdserverpb::StatusResponse status;
      grpc::Status st = stub->Status(&context, etcdserverpb::StatusRequest(), &status);
      row["ok"] = st.ok();
      if (!st.ok()) {
        row["error"] = st.error_message();
      } else {
        row["memberId"] = HexId(status.header().member_id());
        row["leader"] = HexId(status.leader());
        row["raftTerm"] = status.raftterm();
        row["raftIndex"] = status.raftindex();
        row["version"] = status.version();
        row["dbSize"] = status.dbsize();
        row["errors"] = Json::array();
        for (const std::string& error : status.errors()) row["errors"].push_back(error);
        if (status.leader() != 0) leader = HexId(status.leader());
      }
    }
    if (!have_members && row["ok"].get<bool>()) {
      auto stub = etcdserverpb::Cluster::NewStub(channel);
      grpc::ClientContext context;
      SetDeadline(&context);
      etcdserverpb::MemberListResponse list;
      grpc::Status st = stub->MemberList(&context, etcdserverpb::MemberListRequest(), &list);
      if (st.ok()) {
        have_members = true;
        for (const etcdserverpb::Member& member : list.members()) {
          Json peer = Json::array(), client = Json::array();
          for (const std::string& url : member.peerurls()) peer.push_back(url);
          for (const std::string& url : member.clienturls()) client.push_back(url);
          members.push_back({{"id", HexId(member.id())},
                             {"name", member.name()},
                             {"peerURLs", std::move(peer)},
                             {"clientURLs", std::move(client)},
                             {"isLearner", member.islearner()}});
        }
      } else {
        members_error = st.error_message();
      }
    }
    endpoint_rows.push_back(std::move(row));
  }
  for (Json& member : members) member["leader"] = !leader.is_null() && member["id"] == leader;
  Json out = {
      {"endpoints", std::move(endpoint_rows)}, {"members", std::move(members)}, {"leader", leader}};
  if (!have_members) out["membersError"] = members_error;
  return out;
}

void AddSystemRoutes(net::HttpRouter* router, std::vector<std::string> store_endpoints) {
  router->Add(
      "GET", "/v1/system/store",
      [endpoints = std::move(store_endpoints)](const net::HttpRequest&, const net::PathParams&) {
        return net::JsonResponse(200, StoreSystemStatus(endpoints).dump());
      });
}

}  // namespace capstan::experiments
