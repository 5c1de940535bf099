#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <coroutine>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "net/address.h"
#include "store/errors.h"
#include "store/native_call.h"
#include "store/transport_security.h"
#include "store/reconfig_check.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCallPtr;
namespace fs = std::filesystem;

// A snapshot of the backend as a stream of chunks: a tar archive of a
// RocksDB checkpoint, followed by the SHA-256 of the archive. etcdctl's
// `snapshot save` checks for exactly this trailer (the size is a multiple of
// 512 plus 32 bytes). Open and Next read the disk: they run on a worker.
class SnapshotReader {
 public:
  explicit SnapshotReader(Store* store) : store_(store), md_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(md_, EVP_sha256(), nullptr);
  }
  ~SnapshotReader() {
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
    EVP_MD_CTX_free(md_);
  }

  absl::Status Open() {
    static std::atomic<uint64_t> seq{0};
    dir_ = absl::StrCat(store_->options().data_dir, "/member/snapshot-", ::getpid(), "-", ++seq);
    absl::Status st = store_->Checkpoint(dir_);
    if (!st.ok()) {
      CAPSTAN_LOG(warn, "snapshot checkpoint failed", "error", st.ToString());
      return st;
    }
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.is_regular_file()) files_.push_back({e.path().filename().string(), e.file_size()});
    }
    for (const auto& f : files_) total_ += 512 + (f.size + 511) / 512 * 512;
    total_ += 1024 + 32;
    header_.set_revision(store_->mvcc()->current_rev());
    store_->FillHeader(&header_);
    return absl::OkStatus();
  }

  // The next ~64 KiB of the archive as a response, or nullopt at the end.
  std::optional<SnapshotResponse> Next() {
    constexpr size_t kChunk = 64 << 10;
    std::string out;
    while (out.size() < kChunk && !trailer_sent_) {
      if (file_idx_ < files_.size()) {
        const File& f = files_[file_idx_];
        if (!in_file_) {
          out += TarHeader(f.name, f.size);
          in_.open(dir_ + "/" + f.name, std::ios::binary);
          in_file_ = true;
          file_off_ = 0;
        }
        size_t want = std::min<uint64_t>(kChunk, f.size - file_off_);
        std::string buf(want, '\0');
        in_.read(buf.data(), static_cast<std::streamsize>(want));
        out += buf;
        file_off_ += want;
        if (file_off_ >= f.size) {
          out.append((512 - f.size % 512) % 512, '\0');
          in_.close();
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
    if (out.empty()) return std::nullopt;
    if (!hashed_) EVP_DigestUpdate(md_, out.data(), out.size());
    sent_ += out.size();
    SnapshotResponse response;
    *response.mutable_header() = header_;
    response.set_remaining_bytes(total_ - sent_);
    response.set_blob(std::move(out));
    response.set_version(kEtcdApiVersion);
    return response;
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

  Store* store_;
  EVP_MD_CTX* md_;
  std::string dir_;
  std::vector<File> files_;
  size_t file_idx_ = 0;
  bool in_file_ = false;
  uint64_t file_off_ = 0;
  std::ifstream in_;
  uint64_t total_ = 0, sent_ = 0;
  bool trailer_sent_ = false, hashed_ = false;
  ResponseHeader header_;
};

// What a server-streaming coroutine shares with its call's handler (loop
// thread only): whether the call is over, and the coroutine waiting for the
// call's buffered output to drain.
struct StreamState {
  explicit StreamState(GrpcCallPtr c) : call(std::move(c)) {}
  GrpcCallPtr call;
  bool done = false;
  std::coroutine_handle<> room_waiter;

  void Wake() {
    if (room_waiter) call->loop()->Schedule(std::exchange(room_waiter, nullptr));
  }
  // co_await: resumes once the call has room again or is over.
  struct RoomAwaiter {
    StreamState* state;
    bool await_ready() const noexcept { return state->done; }
    void await_suspend(std::coroutine_handle<> h) { state->room_waiter = h; }
    void await_resume() const noexcept {}
  };
  RoomAwaiter Room() { return RoomAwaiter{this}; }
};

// Reads the snapshot on a worker a chunk at a time and writes it out on the
// loop; a slow client pauses the reading (no snapshot piles up in memory).
net::Task<void> StreamSnapshot(Store* store, net::WorkerPool* pool,
                               std::shared_ptr<StreamState> state) {
  net::EventLoop* loop = state->call->loop();
  auto reader = std::make_unique<SnapshotReader>(store);
  SnapshotReader* r = reader.get();
  // Each awaited task is named first: GCC 12 miscompiles a co_await of a
  // temporary inside a larger expression (a second Snapshot call crashed).
  auto open = pool->Run(loop, [r] { return r->Open(); });
  absl::Status st = co_await open;
  if (!st.ok()) {
    state->call->Finish(st);
  } else {
    while (!state->done) {
      auto next = pool->Run(loop, [r] { return r->Next(); });
      std::optional<SnapshotResponse> chunk = co_await next;
      if (state->done) break;
      if (!chunk) {
        state->call->Finish(absl::OkStatus());
        break;
      }
      if (!state->call->WriteFramed(Serialize(*chunk))) co_await state->Room();
    }
  }
  // Removing the checkpoint touches the disk too.
  auto remove = pool->Run(loop, [reader = std::move(reader)]() mutable { reader.reset(); });
  co_await remove;
}

class SnapshotStream final : public net::GrpcStreamHandler {
 public:
  SnapshotStream(Store* store, net::WorkerPool* pool, GrpcCallPtr call)
      : store_(store), pool_(pool), state_(std::make_shared<StreamState>(std::move(call))) {}

  void OnMessage(Buffer bytes) override {
    SnapshotRequest req;
    if (started_) return;
    if (!ParseFrom(bytes, &req)) {
      state_->call->Finish(absl::InternalError(
          "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data"));
      return;
    }
    started_ = true;
    state_->call->loop()->StartOwned(StreamSnapshot(store_, pool_, state_));
  }
  void OnWriteRoom() override { state_->Wake(); }
  void OnDone(bool) override {
    state_->done = true;
    state_->Wake();
  }

 private:
  Store* store_;
  net::WorkerPool* pool_;
  std::shared_ptr<StreamState> state_;
  bool started_ = false;
};

// The rest of Maintenance, on the client loops; what reads or rewrites the
// whole database runs on a worker.
net::Task<void> Defragment(Store* store, net::WorkerPool* pool, GrpcCallPtr call) {
  absl::Status st = co_await pool->Run(call->loop(), [store] { return store->Defragment(); });
  if (!st.ok()) co_return call->Finish(st);
  Reply(call, DefragmentResponse());  // etcd's has no header either
}

net::Task<void> Hash(Store* store, net::WorkerPool* pool, GrpcCallPtr call) {
  uint32_t hash = co_await pool->Run(call->loop(), [store] { return store->BackendHash(); });
  HashResponse resp;
  resp.set_hash(hash);
  store->FillHeader(resp.mutable_header(), 0);
  Reply(call, resp);
}

net::Task<void> HashKV(Store* store, net::WorkerPool* pool, GrpcCallPtr call, int64_t rev) {
  int64_t compact = 0;
  absl::StatusOr<uint32_t> hash = co_await pool->Run(
      call->loop(), [store, rev, &compact] { return store->mvcc()->HashKV(rev, &compact); });
  if (!hash.ok()) co_return call->Finish(hash.status());
  HashKVResponse resp;
  resp.set_hash(*hash);
  resp.set_compact_revision(compact);
  resp.set_hash_revision(rev);
  store->FillHeader(resp.mutable_header(), 0);
  Reply(call, resp);
}

// The transfer is quick when the target is up to date: wait for it here (a
// rare admin call) for up to two election timeouts, checking every 10 ms.
net::Task<void> MoveLeader(Store* store, GrpcCallPtr call, uint64_t target) {
  raft::Node* node = store->node();
  absl::Status st;
  raft::ConfState conf = store->applier()->Conf();
  if (!node->IsLeader()) {
    st = ErrNotLeader();
  } else if (target == store->member_id()) {
    st = absl::OkStatus();  // already the leader
  } else if (std::find(conf.voters.begin(), conf.voters.end(), target) == conf.voters.end()) {
    st = ErrBadLeaderTransferee();
  } else {
    st = node->TransferLeadership(target);
    auto deadline = std::chrono::steady_clock::now() +
                    2 * store->options().heartbeat * store->options().election_ticks;
    while (st.ok() && node->Leader() != target && !call->done()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        st = ErrTimeout();
        break;
      }
      co_await call->loop()->Sleep(std::chrono::milliseconds(10));
    }
  }
  if (!st.ok()) co_return call->Finish(st);
  MoveLeaderResponse resp;
  store->FillHeader(resp.mutable_header(), 0);
  Reply(call, resp);
}

void AddMaintenance(Store* store, MethodTable* server, net::WorkerPool* pool) {
  const std::string svc = "/etcdserverpb.Maintenance/";
  server->AddUnary(svc + "Alarm", [store](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    if (!ParseRequest(call, bytes, entry.mutable_alarm())) return;
    ProposeAndAnswer<AlarmResponse>(store, call, std::move(entry));
  });
  server->AddUnary(svc + "Status", [store](const GrpcCallPtr& call, Buffer bytes) {
    StatusRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    Reply(call, store->Status());
  });
  server->AddUnary(svc + "Defragment", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
    DefragmentRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(Defragment(store, pool, call));
  });
  server->AddUnary(svc + "Hash", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
    HashRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(Hash(store, pool, call));
  });
  server->AddUnary(svc + "HashKV", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
    HashKVRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    int64_t rev = req.revision() > 0 ? req.revision() : store->mvcc()->current_rev();
    call->loop()->StartOwned(HashKV(store, pool, call, rev));
  });
  server->AddStream(svc + "Snapshot", [store, pool](const GrpcCallPtr& call) {
    return std::make_unique<SnapshotStream>(store, pool, call);
  });
  server->AddUnary(svc + "MoveLeader", [store](const GrpcCallPtr& call, Buffer bytes) {
    MoveLeaderRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(MoveLeader(store, call, req.targetid()));
  });
  server->AddUnary(svc + "Downgrade", [](const GrpcCallPtr& call, Buffer bytes) {
    DowngradeRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->Finish(absl::UnimplementedError("capstan: downgrade is not supported"));
  });
}

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
      bool http = url.starts_with("http://") && url.size() > 7;
      bool https = url.starts_with("https://") && url.size() > 8;
      if (!http && !https) return call->Finish(ErrMemberBadUrls());
    }
    if (PeerUrlInUse(req->peerurls(), 0)) return call->Finish(ErrPeerUrlExist());
    int learners = 0;
    for (const auto& m : store_->Members()) learners += m.islearner();
    if (req->islearner() && learners >= 1) {
      return call->Finish(
          absl::FailedPreconditionError("etcdserver: too many learner members in cluster"));
    }
    if (!req->islearner() && store_->options().strict_reconfig_check) {
      if (absl::Status st = CheckAddVoter(store_->Members()); !st.ok()) return call->Finish(st);
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
    if (store_->options().strict_reconfig_check) {
      absl::Status st = CheckRemove(store_->Members(), req->id(), store_->member_id(),
                                    ActiveMembers(std::chrono::seconds(5)));
      if (!st.ok()) return call->Finish(st);
    }
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
    if (store_->options().strict_reconfig_check) {
      if (absl::Status st = CheckPromote(store_->Members()); !st.ok()) return call->Finish(st);
    }
    member->set_islearner(false);
    ProposeChange<MemberPromoteResponse>(raft::ConfChange::Type::kAddVoter, *member, call, false);
  }

 private:
  // This member and those it heard from within `window` (etcd: the peers
  // its transport has been connected to for the health interval).
  std::set<uint64_t> ActiveMembers(std::chrono::steady_clock::duration window) {
    std::set<uint64_t> active{store_->member_id()};
    auto since = std::chrono::steady_clock::now() - window;
    for (const auto& [id, at] : store_->node()->LastHeard()) {
      if (at >= since) active.insert(id);
    }
    return active;
  }

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
        s = Cluster::NewStub(grpc::CreateChannel(
            net::GrpcTarget(target),
            ChannelCredentialsFor(target, store_->options().client_channel_credentials)));
      }
      stub = s;
    }
    auto ctx = std::make_shared<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + store_->options().request_timeout);
    // The leader checks the caller again: its token is valid on every member.
    if (auto token = call->FindMetadata("token")) ctx->AddMetadata("token", std::string(*token));
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

void AddNativeMaintenance(Store* store, MethodTable* server, net::WorkerPool* pool) {
  AddMaintenance(store, server, pool);
}

void AddNativeCluster(Store* store, MethodTable* server) {
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
