// The membership half of Store: member and cluster identity at first start,
// joining an existing cluster, learner state, detecting removal while down,
// and proposing membership changes. Kept apart from store.cc (the data path:
// proposals, reads, apply, snapshots).

#include <openssl/evp.h>

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/coding.h"
#include "base/logging.h"
#include "capstan/peer.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "net/grpc_server.h"
#include "store/errors.h"
#include "store/store.h"
#include "store/transport_security.h"

namespace capstan::store {
namespace {

uint64_t Sha256Prefix(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | md[i];
  return v;
}

}  // namespace

uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& token) {
  std::sort(peer_urls.begin(), peer_urls.end());
  return Sha256Prefix(absl::StrCat(absl::StrJoin(peer_urls, ""), token)) | 1;
}

uint64_t ComputeClusterId(const std::vector<InitialMember>& members, const std::string& token) {
  std::vector<uint64_t> ids;
  for (const auto& m : members) ids.push_back(m.id);
  std::sort(ids.begin(), ids.end());
  std::string seed;
  for (uint64_t v : ids) PutFixed64BE(&seed, v);
  return Sha256Prefix(seed + token) | 1;
}

absl::StatusOr<std::vector<InitialMember>> ParseInitialCluster(const std::string& spec,
                                                               const std::string& token) {
  std::vector<InitialMember> out;
  for (const std::string& part :
       std::vector<std::string>(absl::StrSplit(spec, ',', absl::SkipWhitespace()))) {
    std::vector<std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty() || kv[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--initial-cluster: \"", part, "\" is not name=url (e.g. infra0=http://10.0.0.1:2380)"));
    }
    if (!kv[1].starts_with("http://") && !kv[1].starts_with("https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: ", kv[1], " must be an http:// or https:// URL"));
    }
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const InitialMember& m) { return m.name == kv[0]; });
    if (it == out.end()) {
      out.push_back({kv[0], {}, 0});
      it = out.end() - 1;
    }
    it->peer_urls.push_back(kv[1]);
  }
  if (out.empty()) return absl::InvalidArgumentError("--initial-cluster is empty");
  std::set<uint64_t> ids;
  for (auto& m : out) {
    m.id = ComputeMemberId(m.peer_urls, token);
    if (!ids.insert(m.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("--initial-cluster: member ", m.name,
                                                     " repeats another member's peer URLs"));
    }
  }
  return out;
}

absl::Status Store::InitIdentity(std::vector<raft::Entry>* bootstrap) {
  // Identity: fixed at first start, like etcd's member and cluster IDs; the
  // cluster flags are ignored afterwards.
  auto ident = backend_->Get(MetaKey(kMetaIdentity));
  MemberIdentity id;
  if (ident.ok() && id.ParseFromString(*ident)) {
    member_id_ = id.member_id();
    cluster_id_ = id.cluster_id();
    auto joined = backend_->Get(MetaKey(kMetaJoinMembers));
    etcdserverpb::MemberListResponse list;
    if (joined.ok() && list.ParseFromString(*joined)) {
      join_members_.assign(list.members().begin(), list.members().end());
    }
    return absl::OkStatus();
  }
  std::string spec = options_.initial_cluster;
  if (spec.empty()) {
    for (const auto& url : options_.advertise_peer_urls) {
      absl::StrAppend(&spec, spec.empty() ? "" : ",", options_.name, "=", url);
    }
  }
  ASSIGN_OR_RETURN(std::vector<InitialMember> members,
                   ParseInitialCluster(spec, options_.initial_cluster_token));
  auto self = std::find_if(members.begin(), members.end(),
                           [&](const InitialMember& m) { return m.name == options_.name; });
  if (self == members.end()) {
    return absl::InvalidArgumentError(absl::StrCat("--initial-cluster has no member named \"",
                                                   options_.name, "\" (this member's --name)"));
  }
  std::vector<std::string> mine = options_.advertise_peer_urls, listed = self->peer_urls;
  std::sort(mine.begin(), mine.end());
  std::sort(listed.begin(), listed.end());
  if (mine != listed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--initial-cluster gives ", options_.name, "=", absl::StrJoin(listed, ","),
        " but --initial-advertise-peer-urls is ", absl::StrJoin(mine, ","), "; they must match"));
  }
  if (options_.initial_cluster_state == "existing") {
    RETURN_IF_ERROR(JoinExisting(members, &id));
  } else if (options_.initial_cluster_state == "new") {
    id.set_member_id(self->id);
    id.set_cluster_id(ComputeClusterId(members, options_.initial_cluster_token));
    // The initial membership: the same entries on every founding member.
    std::sort(members.begin(), members.end(),
              [](const InitialMember& a, const InitialMember& b) { return a.id < b.id; });
    uint64_t index = 0;
    for (const auto& m : members) {
      ConfChangeContext ctx;
      ctx.mutable_member()->set_id(m.id);
      for (const auto& u : m.peer_urls) ctx.mutable_member()->add_peerurls(u);
      raft::ConfChange cc{raft::ConfChange::Type::kAddVoter, m.id, ctx.SerializeAsString()};
      bootstrap->push_back(raft::Entry{++index, 1, raft::EntryType::kConfChange, cc.Encode()});
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster-state must be new or existing, not \"",
                     options_.initial_cluster_state, "\""));
  }
  member_id_ = id.member_id();
  cluster_id_ = id.cluster_id();
  id.set_name(options_.name);
  rocksdb::WriteBatch batch;
  batch.Put(MetaKey(kMetaIdentity), id.SerializeAsString());
  if (!join_members_.empty()) {
    // Until this member has caught up, the peers it joined through are the
    // only ones it knows how to reach (also after a restart).
    etcdserverpb::MemberListResponse list;
    for (const auto& m : join_members_) *list.add_members() = m;
    batch.Put(MetaKey(kMetaJoinMembers), list.SerializeAsString());
  }
  RETURN_IF_ERROR(backend_->Write(&batch));
  return backend_->Flush();
}

absl::Status Store::JoinExisting(const std::vector<InitialMember>& members, MemberIdentity* id) {
  // Ask the other members who is in the cluster; this member must already
  // have been added (etcdctl member add) with its peer URLs.
  std::vector<std::string> mine = options_.advertise_peer_urls;
  std::sort(mine.begin(), mine.end());
  std::string errors;
  bool not_listed = false;  // a member answered without this one in its list
  for (int attempt = 0; attempt < 10; ++attempt) {
    for (const auto& m : members) {
      if (m.name == options_.name) continue;
      for (const auto& url : m.peer_urls) {
        auto stub = capstan::peer::Peer::NewStub(grpc::CreateChannel(
            net::GrpcTarget(url), ChannelCredentialsFor(url, options_.peer_channel_credentials)));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        etcdserverpb::MemberListResponse resp;
        grpc::Status st = stub->Members(&ctx, capstan::peer::MembersRequest(), &resp);
        if (!st.ok()) {
          absl::StrAppend(&errors, " ", url, ": ", st.error_message(), ";");
          continue;
        }
        for (const auto& member : resp.members()) {
          std::vector<std::string> urls(member.peerurls().begin(), member.peerurls().end());
          std::sort(urls.begin(), urls.end());
          if (urls == mine) {
            join_members_.assign(resp.members().begin(), resp.members().end());
            id->set_member_id(member.id());
            id->set_cluster_id(resp.header().cluster_id());
            CAPSTAN_LOG(info, "joining an existing cluster", "member_id",
                        absl::StrCat(absl::Hex(member.id())), "via", url);
            return absl::OkStatus();
          }
        }
        // This member may not have applied the `member add` yet (it is
        // answered once the member that took it has): ask the others, and
        // again after a pause, before saying it was never added.
        not_listed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // peers may still be starting
  }
  if (not_listed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this member (peer URLs ", absl::StrJoin(mine, ","),
        ") is not in the cluster's member list; add it first with `etcdctl member add ",
        options_.name, " --peer-urls=", absl::StrJoin(mine, ","), "`"));
  }
  return absl::UnavailableError(absl::StrCat(
      "--initial-cluster-state=existing: could not reach any other member of --initial-cluster:",
      errors));
}

void Store::UpdateIsLearner() {
  raft::ConfState conf = applier_->Conf();
  auto has = [&](const std::vector<uint64_t>& ids) {
    return std::find(ids.begin(), ids.end(), member_id_) != ids.end();
  };
  bool learner = has(conf.learners);
  if (!learner && !has(conf.voters)) {
    // Joined and not caught up yet: the list the peers gave at join says.
    for (const auto& m : join_members_) {
      if (m.id() == member_id_) learner = m.islearner();
    }
  }
  is_learner_.store(learner, std::memory_order_relaxed);
}

bool Store::RemovedWhileAway() {
  // Asked only after several election timeouts without a leader: a member
  // removed while it was down never receives the entry that removed it (the
  // leader stops replicating to it), so it would campaign forever. A
  // majority of the other members saying it is not in the cluster settles
  // it; one lagging peer cannot.
  std::function<std::shared_ptr<capstan::peer::Peer::Stub>(uint64_t)> stubs;
  {
    std::lock_guard<std::mutex> lock(stubs_mu_);
    stubs = peer_stubs_;
  }
  if (!stubs) return false;
  int others = 0, absent = 0;
  for (const auto& m : PeerMembers()) {
    if (m.id() == member_id_) continue;
    ++others;
    auto stub = stubs(m.id());
    if (!stub) continue;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    etcdserverpb::MemberListResponse resp;
    if (!stub->Members(&ctx, capstan::peer::MembersRequest(), &resp).ok()) continue;
    if (resp.header().cluster_id() != cluster_id_ || resp.members().empty()) continue;
    bool listed = std::any_of(resp.members().begin(), resp.members().end(),
                              [&](const etcdserverpb::Member& x) { return x.id() == member_id_; });
    if (!listed) ++absent;
  }
  return others > 0 && absent > others / 2;
}

void Store::ProposeConfChange(raft::ConfChange::Type type, const etcdserverpb::Member& member,
                              ApplyDone done) {
  if (stopping_) {
    done(ErrStopped(), nullptr);
    return;
  }
  // A new leader takes no membership change until it has committed an
  // entry of its term (raft refuses it until then). A read index waits for
  // exactly that, so a change made just after an election waits one round
  // trip instead of failing (etcd's would time out).
  auto shared_done = std::make_shared<ApplyDone>(std::move(done));
  LinearizableRead([this, type, member, shared_done](absl::Status st) {
    if (!st.ok()) return (*shared_done)(st, nullptr);
    ProposeConfChangeNow(type, member, std::move(*shared_done));
  });
}

void Store::ProposeConfChangeNow(raft::ConfChange::Type type, const etcdserverpb::Member& member,
                                 ApplyDone done) {
  uint64_t id = request_nonce_ | (next_request_.fetch_add(1) & 0x0000ffffffffffffull);
  ConfChangeContext ctx;
  ctx.set_request_id(id);
  *ctx.mutable_member() = member;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    waiters_[id] = {std::move(done), clock_->Now() + options_.request_timeout};
  }
  absl::Status st =
      node_->ProposeConfChange(raft::ConfChange{type, member.id(), ctx.SerializeAsString()});
  if (!st.ok()) {
    ApplyDone d = TakeWaiter(id);
    if (!d) return;
    if (absl::StrContains(st.message(), "not the leader")) st = ErrNotLeader();
    if (absl::StrContains(st.message(), "already in progress")) {
      st = absl::FailedPreconditionError(
          "etcdserver: another membership change is in progress; retry when it has applied");
    }
    d(st, nullptr);
  }
}

std::vector<etcdserverpb::Member> Store::PeerMembers() const {
  auto members = applier_->Members();
  for (const auto& m : members) {
    if (m.id() == member_id_) return members;
  }
  return join_members_.empty() ? members : join_members_;
}

}  // namespace capstan::store
