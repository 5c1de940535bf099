#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "net/address.h"
#include "store/errors.h"
#include "store/native_call.h"
#include "store/services.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCallPtr;
namespace fs = std::filesystem;

// Streams a snapshot of the backend: a tar archive of a RocksDB checkpoint,
// followed by the SHA-256 of the archive. etcdctl's `snapshot save` checks for
// exactly this trailer (the size is a multiple of 512 plus 32 bytes).
class SnapshotReactor final : public grpc::ServerWriteReactor<SnapshotResponse> {
 public:
  SnapshotReactor(Store* store) : store_(store), md_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(md_, EVP_sha256(), nullptr);
    static std::atomic<uint64_t> seq{0};
    dir_ = absl::StrCat(store_->options().data_dir, "/member/snapshot-", ::getpid(), "-", ++seq);
    absl::Status st = store_->Checkpoint(dir_);
    if (!st.ok()) {
      CAPSTAN_LOG(warn, "snapshot checkpoint failed", "error", st.ToString());
      Finish(ToGrpc(st));
      return;
    }
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.is_regular_file()) files_.push_back({e.path().filename().string(), e.file_size()});
    }
    for (const auto& f : files_) total_ += 512 + (f.size + 511) / 512 * 512;
    total_ += 1024 + 32;
    header_.set_revision(store_->mvcc()->current_rev());
    store_->FillHeader(&header_);
    NextChunk();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "snapshot stream write failed"));
      return;
    }
    NextChunk();
  }

  void OnDone() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    EVP_MD_CTX_free(md_);
    delete this;
  }

 private:
  struct File {
    std::string name;
    uint64_t size;
  };

  static std::string TarHeader(const std::string& name, uint64_t size) {
    std::string h(512, '\0');
    std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 99));
    std::snprintf(&h[100], 8, "%07o", 0644);
    std::snprintf(&h[108], 8, "%07o", 0);
    std::snprintf(&h[116], 8, "%07o", 0);
    std::snprintf(&h[124], 12, "%011llo", static_cast<unsigned long long>(size));
    std::snprintf(&h[136], 12, "%011o", 0);
    h[156] = '0';
    std::memcpy(&h[257], "ustar", 6);
    std::memcpy(&h[263], "00", 2);
    std::memset(&h[148], ' ', 8);
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    std::snprintf(&h[148], 8, "%06o", sum);
    h[155] = ' ';
    return h;
  }

  // Fills the next ~64 KiB of the archive and writes it.
  void NextChunk() {
    constexpr size_t kChunk = 64 << 10;
    std::string out;
    while (out.size() < kChunk && !trailer_sent_) {
      if (file_idx_ < files_.size()) {
        const File& f = files_[file_idx_];
        if (!in_file_) {
          out += TarHeader(f.name, f.size);
          in.open(dir_ + "/" + f.name, std::ios::binary);
          in_file_ = true;
          file_off_ = 0;
        }
        size_t want = std::min<uint64_t>(kChunk, f.size - file_off_);
        std::string buf(want, '\0');
        in.read(buf.data(), static_cast<std::streamsize>(want));
        out += buf;
        file_off_ += want;
        if (file_off_ >= f.size) {
          out.append((512 - f.size % 512) % 512, '\0');
          in.close();
          in_file_ = false;
          ++file_idx_;
        }
      } else {
        out.append(1024, '\0');
        EVP_DigestUpdate(md_, out.data(), out.size());
        unsigned char digest[32];
        unsigned len = 0;
        EVP_DigestFinal_ex(md_, digest, &len);
        hashed_ = true;
        out.append(reinterpret_cast<char*>(digest), 32);
        trailer_sent_ = true;
      }
    }
    if (out.empty()) {
      Finish(grpc::Status::OK);
      return;
    }
    if (!hashed_) EVP_DigestUpdate(md_, out.data(), out.size());
    sent_ += out.size();
    response_.Clear();
    *response_.mutable_header() = header_;
    response_.set_remaining_bytes(total_ - sent_);
    response_.set_blob(std::move(out));
    response_.set_version(kEtcdApiVersion);
    StartWrite(&response_);
  }

  Store* store_;
  EVP_MD_CTX* md_;
  std::string dir_;
  std::vector<File> files_;
  size_t file_idx_ = 0;
  bool in_file_ = false;
  uint64_t file_off_ = 0;
  std::ifstream in;
  uint64_t total_ = 0, sent_ = 0;
  bool trailer_sent_ = false, hashed_ = false;
  ResponseHeader header_;
  SnapshotResponse response_;
};

class MaintenanceService final : public Maintenance::CallbackService {
 public:
  explicit MaintenanceService(Store* store) : store_(store) {}

  grpc::ServerUnaryReactor* Alarm(grpc::CallbackServerContext* ctx, const AlarmRequest* req,
                                  AlarmResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    LogEntry entry;
    *entry.mutable_alarm() = *req;
    ProposeAndFinish(store_, std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const StatusRequest*,
                                   StatusResponse* resp) override {
    *resp = store_->Status();
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Defragment(grpc::CallbackServerContext* ctx, const DefragmentRequest*,
                                       DefragmentResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = store_->Defragment();
    store_->FillHeader(resp->mutable_header(), 0);
    reactor->Finish(ToGrpc(st));
    return reactor;
  }

  grpc::ServerUnaryReactor* Hash(grpc::CallbackServerContext* ctx, const HashRequest*,
                                 HashResponse* resp) override {
    resp->set_hash(store_->BackendHash());
    store_->FillHeader(resp->mutable_header(), 0);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* HashKV(grpc::CallbackServerContext* ctx, const HashKVRequest* req,
                                   HashKVResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    int64_t rev = req->revision() > 0 ? req->revision() : store_->mvcc()->current_rev();
    int64_t compact = 0;
    auto h = store_->mvcc()->HashKV(rev, &compact);
    if (h.ok()) {
      resp->set_hash(*h);
      resp->set_compact_revision(compact);
      resp->set_hash_revision(rev);
      store_->FillHeader(resp->mutable_header(), 0);
    }
    reactor->Finish(ToGrpc(h.status()));
    return reactor;
  }

  grpc::ServerWriteReactor<SnapshotResponse>* Snapshot(grpc::CallbackServerContext*,
                                                       const SnapshotRequest*) override {
    return new SnapshotReactor(store_);
  }

  grpc::ServerUnaryReactor* MoveLeader(grpc::CallbackServerContext* ctx,
                                       const MoveLeaderRequest* req,
                                       MoveLeaderResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    raft::Node* node = store_->node();
    absl::Status st;
    raft::ConfState conf = store_->applier()->Conf();
    if (!node->IsLeader()) {
      st = ErrNotLeader();
    } else if (req->targetid() == store_->member_id()) {
      st = absl::OkStatus();  // already the leader
    } else if (std::find(conf.voters.begin(), conf.voters.end(), req->targetid()) ==
               conf.voters.end()) {
      st = ErrBadLeaderTransferee();
    } else {
      st = node->TransferLeadership(req->targetid());
      // The transfer is quick when the target is up to date: wait for it here
      // (a rare admin call) for up to two election timeouts.
      auto deadline = std::chrono::steady_clock::now() +
                      2 * store_->options().heartbeat * store_->options().election_ticks;
      while (st.ok() && node->Leader() != req->targetid()) {
        if (std::chrono::steady_clock::now() >= deadline) {
          st = ErrTimeout();
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    store_->FillHeader(resp->mutable_header(), 0);
    reactor->Finish(ToGrpc(st));
    return reactor;
  }

  grpc::ServerUnaryReactor* Downgrade(grpc::CallbackServerContext* ctx, const DowngradeRequest*,
                                      DowngradeResponse*) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(
        grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "capstan: downgrade is not supported"));
    return reactor;
  }

 private:
  Store* store_;
};

// ---- Cluster, served natively on the client loops.
//
// Membership changes run on the leader (the Raft core takes them only
// there); a follower forwards the request to the leader's client URL.
class NativeCluster {
 public:
  explicit NativeCluster(Store* store) : store_(store) {}

  void MemberList(const GrpcCallPtr& call, Buffer bytes) {
    MemberListRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    MemberListResponse resp;
    for (const auto& m : store_->Members()) {
      Member* out = resp.add_members();
      *out = m;
      if (m.id() == store_->member_id() && m.name().empty()) {
        // This member has not published its attributes through the log yet
        // (no leader so far): it knows them, so show them.
        out->set_name(store_->options().name);
        for (const auto& u : store_->options().advertise_client_urls) out->add_clienturls(u);
      }
    }
    store_->FillHeader(resp.mutable_header(), 0);
    Reply(call, resp);
  }

  void MemberAdd(const GrpcCallPtr& call, Buffer bytes) {
    auto req = std::make_shared<MemberAddRequest>();
    if (!ParseRequest(call, bytes, req.get())) return;
    if (Forward<MemberAddRequest, MemberAddResponse>(
            call, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) {
              a->MemberAdd(c, q, r, std::move(cb));
            })) {
      return;
    }
    if (req->peerurls().empty()) return call->Finish(ErrMemberBadUrls());
    for (const auto& url : req->peerurls()) {
      if (!url.starts_with("http://") || url.size() <= 7) return call->Finish(ErrMemberBadUrls());
    }
    if (PeerUrlInUse(req->peerurls(), 0)) return call->Finish(ErrPeerUrlExist());
    int learners = 0;
    for (const auto& m : store_->Members()) learners += m.islearner();
    if (req->islearner() && learners >= 1) {
      return call->Finish(
          absl::FailedPreconditionError("etcdserver: too many learner members in cluster"));
    }
    Member m;
    std::random_device rd;
    m.set_id(((static_cast<uint64_t>(rd()) << 32) ^ rd()) | 1);
    *m.mutable_peerurls() = req->peerurls();
    m.set_islearner(req->islearner());
    ProposeChange<MemberAddResponse>(
        req->islearner() ? raft::ConfChange::Type::kAddLearner : raft::ConfChange::Type::kAddVoter,
        m, call, /*with_changed=*/true);
  }

  void MemberRemove(const GrpcCallPtr& call, Buffer bytes) {
    auto req = std::make_shared<MemberRemoveRequest>();
    if (!ParseRequest(call, bytes, req.get())) return;
    if (Forward<MemberRemoveRequest, MemberRemoveResponse>(
            call, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) {
              a->MemberRemove(c, q, r, std::move(cb));
            })) {
      return;
    }
    auto member = Find(req->id());
    if (!member) return call->Finish(ErrMemberNotFound());
    ProposeChange<MemberRemoveResponse>(raft::ConfChange::Type::kRemove, *member, call, false);
  }

  void MemberUpdate(const GrpcCallPtr& call, Buffer bytes) {
    auto req = std::make_shared<MemberUpdateRequest>();
    if (!ParseRequest(call, bytes, req.get())) return;
    if (Forward<MemberUpdateRequest, MemberUpdateResponse>(
            call, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) {
              a->MemberUpdate(c, q, r, std::move(cb));
            })) {
      return;
    }
    if (!Find(req->id())) return call->Finish(ErrMemberNotFound());
    if (req->peerurls().empty()) return call->Finish(ErrMemberBadUrls());
    if (PeerUrlInUse(req->peerurls(), req->id())) return call->Finish(ErrPeerUrlExist());
    LogEntry entry;
    *entry.mutable_member_update() = std::move(*req);
    store_->ProposeFromLoop(
        std::move(entry),
        [store = store_, call](absl::Status st, google::protobuf::Message* msg) {
          MemberUpdateResponse resp;
          if (st.ok() && msg != nullptr) {
            auto* list = static_cast<MemberListResponse*>(msg);
            *resp.mutable_members() = list->members();
            store->FillHeader(resp.mutable_header(), 0);
          }
          AnswerAsIs(call, st, resp);
        },
        call->loop());
  }

  void MemberPromote(const GrpcCallPtr& call, Buffer bytes) {
    auto req = std::make_shared<MemberPromoteRequest>();
    if (!ParseRequest(call, bytes, req.get())) return;
    if (Forward<MemberPromoteRequest, MemberPromoteResponse>(
            call, req, [](auto* a, auto* c, auto* q, auto* r, auto cb) {
              a->MemberPromote(c, q, r, std::move(cb));
            })) {
      return;
    }
    auto member = Find(req->id());
    if (!member) return call->Finish(ErrMemberNotFound());
    if (!member->islearner()) return call->Finish(ErrMemberNotLearner());
    // As etcd: promote only a learner that has caught up (90% of the leader's log).
    raft::NodeStatus status = store_->node()->Status();
    auto match = status.match.find(req->id());
    if (match == status.match.end() ||
        static_cast<double>(match->second) < 0.9 * static_cast<double>(status.committed)) {
      return call->Finish(ErrLearnerNotReady());
    }
    member->set_islearner(false);
    ProposeChange<MemberPromoteResponse>(raft::ConfChange::Type::kAddVoter, *member, call, false);
  }

 private:
  // Proposes a membership change and answers with the members after it; the
  // changed member comes first in the applied reply and goes to the
  // response's `member` when it has one.
  template <typename Resp>
  void ProposeChange(raft::ConfChange::Type type, const Member& member, const GrpcCallPtr& call,
                     bool with_changed) {
    store_->ProposeConfChange(
        type, member,
        [store = store_, call, with_changed](absl::Status st, google::protobuf::Message* msg) {
          Resp resp;
          if (st.ok() && msg != nullptr) {
            auto* list = static_cast<MemberListResponse*>(msg);
            if constexpr (std::is_same_v<Resp, MemberAddResponse>) {
              if (with_changed) *resp.mutable_member() = list->members(0);
            }
            for (int i = 1; i < list->members_size(); ++i) *resp.add_members() = list->members(i);
            store->FillHeader(resp.mutable_header(), 0);
          }
          AnswerAsIs(call, st, resp);
        });
  }

  // Whether another member (not `except`) already uses one of `urls`.
  bool PeerUrlInUse(const google::protobuf::RepeatedPtrField<std::string>& urls, uint64_t except) {
    for (const auto& m : store_->Members()) {
      if (m.id() == except) continue;
      for (const auto& url : m.peerurls()) {
        if (std::find(urls.begin(), urls.end(), url) != urls.end()) return true;
      }
    }
    return false;
  }

  std::optional<Member> Find(uint64_t id) {
    for (const auto& m : store_->Members()) {
      if (m.id() == id) return m;
    }
    return std::nullopt;
  }

  // On a follower, sends the request to the leader's client URL and answers
  // with the leader's answer. Returns false when this member is the leader.
  template <typename Req, typename Resp, typename Method>
  bool Forward(const GrpcCallPtr& call, std::shared_ptr<Req> req, Method method) {
    raft::Node* node = store_->node();
    if (node->IsLeader()) return false;
    uint64_t leader = node->Leader();
    std::string target;
    for (const auto& m : store_->Members()) {
      if (m.id() == leader && !m.clienturls().empty()) target = m.clienturls(0);
    }
    if (leader == 0 || target.empty()) {
      call->Finish(ErrNoLeader());
      return true;
    }
    std::shared_ptr<Cluster::Stub> stub;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& s = stubs_[target];
      if (!s) {
        s = Cluster::NewStub(
            grpc::CreateChannel(net::GrpcTarget(target), grpc::InsecureChannelCredentials()));
      }
      stub = s;
    }
    auto ctx = std::make_shared<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + store_->options().request_timeout);
    auto resp = std::make_shared<Resp>();
    method(stub->async(), ctx.get(), req.get(), resp.get(),
           std::function<void(grpc::Status)>([ctx, stub, req, resp, call](grpc::Status st) {
             AnswerAsIs(call, FromGrpc(st), *resp);
           }));
    return true;
  }

  Store* store_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Cluster::Stub>> stubs_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewMaintenanceService(Store* store) {
  return std::make_unique<MaintenanceService>(store);
}

void AddNativeCluster(Store* store, net::GrpcServer* server) {
  // Lives as long as the process's handlers (the server keeps copies of them).
  auto cluster = std::make_shared<NativeCluster>(store);
  auto add = [&](const char* name, void (NativeCluster::*fn)(const GrpcCallPtr&, Buffer)) {
    server->AddUnary(std::string("/etcdserverpb.Cluster/") + name,
                     [cluster, fn](const GrpcCallPtr& call, Buffer bytes) {
                       ((*cluster).*fn)(call, std::move(bytes));
                     });
  };
  add("MemberList", &NativeCluster::MemberList);
  add("MemberAdd", &NativeCluster::MemberAdd);
  add("MemberRemove", &NativeCluster::MemberRemove);
  add("MemberUpdate", &NativeCluster::MemberUpdate);
  add("MemberPromote", &NativeCluster::MemberPromote);
}

}  // namespace capstan::store
