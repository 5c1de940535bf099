// What each method of the etcd API needs while auth is enabled. The rules
// are etcd's (server/etcdserver/apply/auth.go, api/v3rpc/*.go), including
// the checks its security advisories added after 3.4:
//
//   - every op of a txn is checked, nested txns included, on both branches,
//     with a Put's prev_kv needing READ (GHSA-rfx7-8w68-q57q,
//     GHSA-x35m-3gp4-4fh5);
//   - a watch "from key" (range_end "\0") needs READ to the end of the key
//     space, not on the one key (GHSA-xg4h-6gfc-h4m8);
//   - LeaseTimeToLive and LeaseLeases need READ on the leases' keys
//     (CVE-2023-32082), LeaseKeepAlive WRITE (as LeaseRevoke);
//   - MemberList, Status, Alarm GET and the Lease API need an identity;
//     Compact, Alarm changes and the admin calls the root role
//     (GHSA-q8m4-xhhv-38mg).
//
// What depends on state at apply time (the keys attached to a lease that a
// Put attaches to or a LeaseRevoke deletes) is checked again by the applier.
#include "etcd/etcdserverpb/rpc.pb.h"
#include "etcd/v3electionpb/v3election.pb.h"
#include "etcd/v3lockpb/v3lock.pb.h"
#include "store/auth_gate.h"
#include "store/native_call.h"
#include "store/store.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;

absl::Status ParseError() {
  return absl::InternalError(
      "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data");
}

// A policy that parses the request as Req and checks it with fn.
template <typename Req, typename Fn>
AuthPolicy Parsed(Fn fn) {
  return [fn](Store* store, const AuthInfo& who, net::Buffer& bytes) -> absl::Status {
    Req req;
    if (!ParseFrom(bytes, &req)) return ParseError();
    return fn(store, store->auth(), who, req);
  };
}

AuthPolicy Identified() {
  return [](Store* store, const AuthInfo& who, net::Buffer&) {
    return store->auth()->CheckIdentified(who);
  };
}

AuthPolicy Admin() {
  return [](Store* store, const AuthInfo& who, net::Buffer&) {
    return store->auth()->CheckAdmin(who);
  };
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(end.back() + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string("\0", 1);  // all 0xff: to the end
}

absl::Status CheckPut(AuthStore* auth, const AuthInfo& who, const PutRequest& p) {
  RETURN_IF_ERROR(auth->CheckWrite(who, p.key(), ""));
  if (p.prev_kv()) RETURN_IF_ERROR(auth->CheckRead(who, p.key(), ""));
  return absl::OkStatus();
}

absl::Status CheckDelete(AuthStore* auth, const AuthInfo& who, const DeleteRangeRequest& d) {
  if (d.prev_kv()) RETURN_IF_ERROR(auth->CheckRead(who, d.key(), d.range_end()));
  return auth->CheckWrite(who, d.key(), d.range_end());
}

absl::Status CheckOps(AuthStore* auth, const AuthInfo& who,
                      const google::protobuf::RepeatedPtrField<RequestOp>& ops);

absl::Status CheckTxn(AuthStore* auth, const AuthInfo& who, const TxnRequest& t) {
  for (const auto& c : t.compare()) RETURN_IF_ERROR(auth->CheckRead(who, c.key(), c.range_end()));
  RETURN_IF_ERROR(CheckOps(auth, who, t.success()));
  return CheckOps(auth, who, t.failure());
}

absl::Status CheckOps(AuthStore* auth, const AuthInfo& who,
                      const google::protobuf::RepeatedPtrField<RequestOp>& ops) {
  for (const auto& op : ops) {
    switch (op.request_case()) {
      case RequestOp::kRequestRange:
        RETURN_IF_ERROR(
            auth->CheckRead(who, op.request_range().key(), op.request_range().range_end()));
        break;
      case RequestOp::kRequestPut:
        RETURN_IF_ERROR(CheckPut(auth, who, op.request_put()));
        break;
      case RequestOp::kRequestDeleteRange:
        RETURN_IF_ERROR(CheckDelete(auth, who, op.request_delete_range()));
        break;
      case RequestOp::kRequestTxn:
        RETURN_IF_ERROR(CheckTxn(auth, who, op.request_txn()));
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

// Every key attached to `lease` passes `check` (the root role passes all).
template <typename Check>
absl::Status CheckLeaseKeys(Store* store, const AuthInfo& who, int64_t lease, Check check) {
  AuthStore* auth = store->auth();
  RETURN_IF_ERROR(auth->CheckIdentified(who));
  if (auth->IsAdmin(who.user)) return absl::OkStatus();
  absl::StatusOr<std::vector<std::string>> keys = store->lessor()->Keys(lease);
  if (!keys.ok()) return absl::OkStatus();  // no such lease: the handler says so
  for (const auto& k : *keys) RETURN_IF_ERROR(check(auth, k));
  return absl::OkStatus();
}

// Lock and Campaign read and write under "name/" (their recipe's keys).
absl::Status CheckRecipePrefix(AuthStore* auth, const AuthInfo& who, const std::string& name,
                               bool write) {
  std::string prefix = name + "/";
  std::string end = PrefixEnd(prefix);
  RETURN_IF_ERROR(auth->CheckRead(who, prefix, end));
  if (write) RETURN_IF_ERROR(auth->CheckWrite(who, prefix, end));
  return absl::OkStatus();
}

}  // namespace

std::map<std::string, AuthPolicy, std::less<>> MakeAuthPolicies() {
  std::map<std::string, AuthPolicy, std::less<>> p;
  // ---- KV
  p["/etcdserverpb.KV/Range"] =
      Parsed<RangeRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return auth->CheckRead(who, r.key(), r.range_end());
      });
  p["/etcdserverpb.KV/Put"] =
      Parsed<PutRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckPut(auth, who, r);
      });
  p["/etcdserverpb.KV/DeleteRange"] =
      Parsed<DeleteRangeRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckDelete(auth, who, r);
      });
  p["/etcdserverpb.KV/Txn"] =
      Parsed<TxnRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckTxn(auth, who, r);
      });
  p["/etcdserverpb.KV/Compact"] = Admin();
  // ---- Watch: each create request (prev_kv reads the same range).
  p["/etcdserverpb.Watch/Watch"] =
      Parsed<WatchRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        if (!r.has_create_request()) return absl::OkStatus();
        return auth->CheckRead(who, r.create_request().key(), r.create_request().range_end());
      });
  // ---- Lease
  p["/etcdserverpb.Lease/LeaseGrant"] = Identified();
  // The keys are checked again at apply, where they are deleted.
  p["/etcdserverpb.Lease/LeaseRevoke"] =
      Parsed<LeaseRevokeRequest>([](Store* store, AuthStore*, const AuthInfo& who, const auto& r) {
        return CheckLeaseKeys(store, who, r.id(), [&](AuthStore* auth, const std::string& k) {
          return auth->CheckWrite(who, k, "");
        });
      });
  p["/etcdserverpb.Lease/LeaseKeepAlive"] = Parsed<LeaseKeepAliveRequest>(
      [](Store* store, AuthStore*, const AuthInfo& who, const auto& r) {
        return CheckLeaseKeys(store, who, r.id(), [&](AuthStore* auth, const std::string& k) {
          return auth->CheckWrite(who, k, "");
        });
      });
  p["/etcdserverpb.Lease/LeaseTimeToLive"] = Parsed<LeaseTimeToLiveRequest>(
      [](Store* store, AuthStore*, const AuthInfo& who, const auto& r) {
        return CheckLeaseKeys(store, who, r.id(), [&](AuthStore* auth, const std::string& k) {
          return auth->CheckRead(who, k, "");
        });
      });
  p["/etcdserverpb.Lease/LeaseLeases"] = [](Store* store, const AuthInfo& who, net::Buffer&) {
    for (int64_t id : store->lessor()->Leases()) {
      RETURN_IF_ERROR(CheckLeaseKeys(store, who, id, [&](AuthStore* auth, const std::string& k) {
        return auth->CheckRead(who, k, "");
      }));
    }
    return store->auth()->CheckIdentified(who);
  };
  // ---- Cluster
  p["/etcdserverpb.Cluster/MemberList"] = Identified();
  for (const char* m : {"MemberAdd", "MemberRemove", "MemberUpdate", "MemberPromote"}) {
    p[std::string("/etcdserverpb.Cluster/") + m] = Admin();
  }
  // ---- Maintenance
  p["/etcdserverpb.Maintenance/Status"] = Identified();
  p["/etcdserverpb.Maintenance/Alarm"] =
      Parsed<AlarmRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        if (r.action() == AlarmRequest::GET) return auth->CheckIdentified(who);
        return auth->CheckAdmin(who);
      });
  for (const char* m : {"Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade"}) {
    p[std::string("/etcdserverpb.Maintenance/") + m] = Admin();
  }
  // ---- Auth (Authenticate and AuthStatus are open: AuthGate::IsOpen)
  for (const char* m : {"AuthEnable", "AuthDisable", "UserAdd", "UserList", "UserDelete",
                        "UserChangePassword", "UserGrantRole", "UserRevokeRole", "RoleAdd",
                        "RoleList", "RoleDelete", "RoleGrantPermission", "RoleRevokePermission"}) {
    p[std::string("/etcdserverpb.Auth/") + m] = Admin();
  }
  // A user may read itself and the roles it has.
  p["/etcdserverpb.Auth/UserGet"] =
      Parsed<AuthUserGetRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        absl::Status st = auth->CheckAdmin(who);
        if (!st.ok() && !who.user.empty() && r.name() == who.user) return absl::OkStatus();
        return st;
      });
  p["/etcdserverpb.Auth/RoleGet"] =
      Parsed<AuthRoleGetRequest>([](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        absl::Status st = auth->CheckAdmin(who);
        if (!st.ok() && auth->HasRole(who.user, r.role())) return absl::OkStatus();
        return st;
      });
  // ---- Lock and Election: their recipes' keys.
  p["/v3lockpb.Lock/Lock"] = Parsed<v3lockpb::LockRequest>(
      [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckRecipePrefix(auth, who, r.name(), true);
      });
  p["/v3lockpb.Lock/Unlock"] = Parsed<v3lockpb::UnlockRequest>(
      [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return auth->CheckWrite(who, r.key(), "");
      });
  p["/v3electionpb.Election/Campaign"] = Parsed<v3electionpb::CampaignRequest>(
      [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckRecipePrefix(auth, who, r.name(), true);
      });
  auto leader_key = [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
    RETURN_IF_ERROR(auth->CheckRead(who, r.leader().key(), ""));
    return auth->CheckWrite(who, r.leader().key(), "");
  };
  p["/v3electionpb.Election/Proclaim"] = Parsed<v3electionpb::ProclaimRequest>(leader_key);
  p["/v3electionpb.Election/Resign"] = Parsed<v3electionpb::ResignRequest>(leader_key);
  p["/v3electionpb.Election/Leader"] = Parsed<v3electionpb::LeaderRequest>(
      [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckRecipePrefix(auth, who, r.name(), false);
      });
  p["/v3electionpb.Election/Observe"] = Parsed<v3electionpb::LeaderRequest>(
      [](Store*, AuthStore* auth, const AuthInfo& who, const auto& r) {
        return CheckRecipePrefix(auth, who, r.name(), false);
      });
  return p;
}

}  // namespace capstan::store
