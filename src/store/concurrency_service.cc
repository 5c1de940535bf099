// v3lock and v3election, implemented inside the server on top of the KV store
// the way etcd implements them (etcd runs its clientv3/concurrency recipes
// against itself): a waiter puts a key under the name's prefix with its lease,
// and holds the lock (or leadership) once every key created before it is gone.
// These RPCs block while waiting: each call runs on a thread of its own (as
// gRPC's synchronous server would run it), never on gRPC's callback threads,
// and the server has no synchronous services (whose polling threads would
// compete with the callback threads for every request).
#include <condition_variable>
#include <future>
#include <thread>

#include "absl/strings/str_format.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/v3electionpb/v3election.grpc.pb.h"
#include "etcd/v3lockpb/v3lock.grpc.pb.h"
#include "store/errors.h"
#include "store/services.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;

template <typename Resp>
absl::StatusOr<Resp> ProposeSync(Store* store, LogEntry entry) {
  std::promise<absl::StatusOr<Resp>> promise;
  auto future = promise.get_future();
  store->Propose(std::move(entry), [&promise](absl::Status st, google::protobuf::Message* m) {
    if (!st.ok()) {
      promise.set_value(st);
      return;
    }
    Resp r;
    if (m != nullptr) r.Swap(static_cast<Resp*>(m));
    promise.set_value(std::move(r));
  });
  return future.get();
}

absl::StatusOr<TxnResponse> Txn(Store* store, TxnRequest req) {
  LogEntry e;
  *e.mutable_txn() = std::move(req);
  ASSIGN_OR_RETURN(TxnResponse resp, ProposeSync<TxnResponse>(store, std::move(e)));
  store->FillHeader(resp.mutable_header());
  return resp;
}

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

// The key in prefix with the lowest (first) or highest (last) create
// revision, optionally created at or before max_create_rev.
RangeRequest ByCreate(const std::string& prefix, bool first, int64_t max_create_rev = 0) {
  RangeRequest r;
  r.set_key(prefix);
  r.set_range_end(PrefixEnd(prefix));
  r.set_sort_target(RangeRequest::CREATE);
  r.set_sort_order(first ? RangeRequest::ASCEND : RangeRequest::DESCEND);
  r.set_limit(1);
  r.set_max_create_revision(max_create_rev);
  return r;
}

Compare CreateRevisionIs(const std::string& key, int64_t rev) {
  Compare c;
  c.set_key(key);
  c.set_target(Compare::CREATE);
  c.set_result(Compare::EQUAL);
  c.set_create_revision(rev);
  return c;
}

// A waiter's key: name + "/" + hex(lease), as etcd's recipes name it.
std::string WaiterKey(const std::string& name, int64_t lease) {
  return name + "/" + absl::StrFormat("%x", lease);
}

// The txn both recipes start with: create the waiter key if absent (its first
// response is then the put), else read it back (first response: the range).
TxnRequest CreateOrGet(const std::string& key, const std::string& value, int64_t lease) {
  TxnRequest t;
  *t.add_compare() = CreateRevisionIs(key, 0);
  auto* put = t.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  t.add_failure()->mutable_request_range()->set_key(key);
  return t;
}

absl::StatusOr<RangeResponse> Get(Store* store, const RangeRequest& req) {
  RangeResponse resp;
  RETURN_IF_ERROR(store->applier()->Range(req, &resp));
  store->FillHeader(resp.mutable_header());
  return resp;
}

// Waits until no key in prefix has a create revision <= max_create_rev
// (etcd's waitDeletes). Returns the header of the read that saw none.
absl::StatusOr<ResponseHeader> WaitDeletes(Store* store, grpc::ServerContextBase* ctx,
                                           const std::string& prefix, int64_t max_create_rev) {
  while (true) {
    ASSIGN_OR_RETURN(RangeResponse r, Get(store, ByCreate(prefix, false, max_create_rev)));
    if (r.kvs().empty()) return r.header();
    int64_t seen = r.header().revision();
    while (store->mvcc()->current_rev() <= seen) {
      if (ctx->IsCancelled()) return absl::CancelledError("context canceled");
      store->WaitRevisionAbove(seen,
                               std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    }
  }
}

// Threads for calls that block. Each call gets one, joined when it ends or
// at the latest when the service is destroyed (after the server shut down,
// which cancels the calls still waiting).
class BlockingCalls {
 public:
  ~BlockingCalls() {
    std::vector<Call> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(calls_);
    }
    for (auto& c : all) c.thread.join();
  }

  void Run(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(calls_, [](Call& c) {
      if (!c.done->load()) return false;
      c.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    calls_.push_back({std::thread([fn = std::move(fn), done] {
                        fn();
                        done->store(true);
                      }),
                      done});
  }

 private:
  struct Call {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex mu_;
  std::vector<Call> calls_;
};

// Runs `body` on its own thread and finishes the unary call with its status.
template <typename Body>
grpc::ServerUnaryReactor* RunBlocking(BlockingCalls* calls, grpc::CallbackServerContext* ctx,
                                      Body body) {
  auto* reactor = ctx->DefaultReactor();
  calls->Run([reactor, body = std::move(body)]() mutable { reactor->Finish(body()); });
  return reactor;
}

class LockService final : public v3lockpb::Lock::CallbackService {
 public:
  explicit LockService(Store* store) : store_(store) {}

  grpc::ServerUnaryReactor* Lock(grpc::CallbackServerContext* ctx, const v3lockpb::LockRequest* req,
                                 v3lockpb::LockResponse* resp) override {
    return RunBlocking(&calls_, ctx, [this, ctx, req, resp] { return DoLock(ctx, req, resp); });
  }

  grpc::ServerUnaryReactor* Unlock(grpc::CallbackServerContext* ctx,
                                   const v3lockpb::UnlockRequest* req,
                                   v3lockpb::UnlockResponse* resp) override {
    return RunBlocking(&calls_, ctx, [this, req, resp]() -> grpc::Status {
      auto d = Delete(req->key());
      if (!d.ok()) return ToGrpc(d.status());
      *resp->mutable_header() = d->header();
      return grpc::Status::OK;
    });
  }

 private:
  grpc::Status DoLock(grpc::ServerContextBase* ctx, const v3lockpb::LockRequest* req,
                      v3lockpb::LockResponse* resp) {
    std::string prefix = req->name() + "/";
    std::string key = WaiterKey(req->name(), req->lease());
    TxnRequest t = CreateOrGet(key, "", req->lease());
    // Also fetch the current holder, to finish the uncontended case in one txn.
    *t.add_success()->mutable_request_range() = ByCreate(prefix, true);
    *t.add_failure()->mutable_request_range() = ByCreate(prefix, true);
    auto tr = Txn(store_, t);
    if (!tr.ok()) return ToGrpc(tr.status());
    int64_t my_rev = tr->header().revision();
    if (!tr->succeeded()) my_rev = tr->responses(0).response_range().kvs(0).create_revision();
    const auto& owner = tr->responses(1).response_range().kvs();
    if (owner.empty() || owner[0].create_revision() == my_rev) {
      *resp->mutable_header() = tr->header();
      resp->set_key(key);
      return grpc::Status::OK;
    }
    auto hdr = WaitDeletes(store_, ctx, prefix, my_rev - 1);
    if (!hdr.ok()) {
      (void)Delete(key);  // give up our place in line; the lease ends it anyway
      return ToGrpc(hdr.status());
    }
    *resp->mutable_header() = *hdr;
    resp->set_key(key);
    return grpc::Status::OK;
  }

  absl::StatusOr<DeleteRangeResponse> Delete(const std::string& key) {
    LogEntry e;
    e.mutable_delete_range()->set_key(key);
    ASSIGN_OR_RETURN(DeleteRangeResponse r, ProposeSync<DeleteRangeResponse>(store_, e));
    store_->FillHeader(r.mutable_header());
    return r;
  }

  Store* store_;
  BlockingCalls calls_;  // last: destroyed (joined) first
};

// A server stream written from a blocking thread: Write waits until gRPC has
// taken the message. The thread's last act is Finish; gRPC deletes the
// reactor in OnDone.
class BlockingLeaderWriter final : public grpc::ServerWriteReactor<v3electionpb::LeaderResponse> {
 public:
  bool Write(const v3electionpb::LeaderResponse& msg) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      msg_ = msg;
      write_done_ = false;
    }
    StartWrite(&msg_);  // outside the lock: the completion may run inline
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return write_done_; });
    return write_ok_;
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_ok_ = ok;
    write_done_ = true;
    cv_.notify_all();
  }
  void OnDone() override { delete this; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  v3electionpb::LeaderResponse msg_;
  bool write_done_ = false;
  bool write_ok_ = false;
};

class ElectionService final : public v3electionpb::Election::CallbackService {
 public:
  explicit ElectionService(Store* store) : store_(store) {}

  grpc::ServerUnaryReactor* Campaign(grpc::CallbackServerContext* ctx,
                                     const v3electionpb::CampaignRequest* req,
                                     v3electionpb::CampaignResponse* resp) override {
    return RunBlocking(&calls_, ctx, [this, ctx, req, resp] { return DoCampaign(ctx, req, resp); });
  }

  grpc::ServerUnaryReactor* Proclaim(grpc::CallbackServerContext* ctx,
                                     const v3electionpb::ProclaimRequest* req,
                                     v3electionpb::ProclaimResponse* resp) override {
    return RunBlocking(&calls_, ctx, [this, req, resp]() -> grpc::Status {
      if (!req->has_leader()) return MissingLeader();
      const auto& l = req->leader();
      return ToGrpc(
          SetLeaderValue(l.key(), l.rev(), l.lease(), req->value(), resp->mutable_header()));
    });
  }

  grpc::ServerUnaryReactor* Leader(grpc::CallbackServerContext* ctx,
                                   const v3electionpb::LeaderRequest* req,
                                   v3electionpb::LeaderResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(DoLeader(req, resp));
    return reactor;
  }

  grpc::ServerWriteReactor<v3electionpb::LeaderResponse>* Observe(
      grpc::CallbackServerContext* ctx, const v3electionpb::LeaderRequest* req) override {
    auto* writer = new BlockingLeaderWriter();
    calls_.Run([this, ctx, req, writer] { writer->Finish(DoObserve(ctx, req, writer)); });
    return writer;
  }

  grpc::ServerUnaryReactor* Resign(grpc::CallbackServerContext* ctx,
                                   const v3electionpb::ResignRequest* req,
                                   v3electionpb::ResignResponse* resp) override {
    return RunBlocking(&calls_, ctx, [this, req, resp]() -> grpc::Status {
      if (!req->has_leader()) return MissingLeader();
      return ToGrpc(
          DeleteLeaderKey(req->leader().key(), req->leader().rev(), resp->mutable_header()));
    });
  }

 private:
  grpc::Status DoCampaign(grpc::ServerContextBase* ctx, const v3electionpb::CampaignRequest* req,
                          v3electionpb::CampaignResponse* resp) {
    std::string prefix = req->name() + "/";
    std::string key = WaiterKey(req->name(), req->lease());
    TxnRequest t = CreateOrGet(key, req->value(), req->lease());
    auto tr = Txn(store_, t);
    if (!tr.ok()) return ToGrpc(tr.status());
    int64_t leader_rev = tr->header().revision();
    if (!tr->succeeded()) {
      const auto& kv = tr->responses(0).response_range().kvs(0);
      leader_rev = kv.create_revision();
      if (kv.value() != req->value()) {
        absl::Status st = SetLeaderValue(key, leader_rev, req->lease(), req->value(), nullptr);
        if (!st.ok()) {
          (void)DeleteLeaderKey(key, leader_rev, nullptr);
          return ToGrpc(st);
        }
      }
    }
    auto waited = WaitDeletes(store_, ctx, prefix, leader_rev - 1);
    if (!waited.ok()) {
      if (ctx->IsCancelled()) (void)DeleteLeaderKey(key, leader_rev, nullptr);
      return ToGrpc(waited.status());
    }
    *resp->mutable_header() = tr->header();
    auto* leader = resp->mutable_leader();
    leader->set_name(req->name());
    leader->set_key(key);
    leader->set_rev(leader_rev);
    leader->set_lease(req->lease());
    return grpc::Status::OK;
  }

  grpc::Status DoLeader(const v3electionpb::LeaderRequest* req,
                        v3electionpb::LeaderResponse* resp) {
    auto r = Get(store_, ByCreate(req->name() + "/", true));
    if (!r.ok()) return ToGrpc(r.status());
    if (r->kvs().empty()) return ToGrpc(ErrElectionNoLeader());
    *resp->mutable_header() = r->header();
    *resp->mutable_kv() = r->kvs(0);
    return grpc::Status::OK;
  }

  grpc::Status DoObserve(grpc::ServerContextBase* ctx, const v3electionpb::LeaderRequest* req,
                         BlockingLeaderWriter* writer) {
    std::string prefix = req->name() + "/";
    std::string last_key;
    int64_t last_mod = 0;
    while (!ctx->IsCancelled()) {
      auto r = Get(store_, ByCreate(prefix, true));
      if (!r.ok()) return ToGrpc(r.status());
      int64_t seen = r->header().revision();
      if (!r->kvs().empty()) {
        const auto& kv = r->kvs(0);
        if (kv.key() != last_key || kv.mod_revision() != last_mod) {
          v3electionpb::LeaderResponse out;
          *out.mutable_header() = r->header();
          *out.mutable_kv() = kv;
          if (!writer->Write(out)) return grpc::Status::OK;
          last_key = kv.key();
          last_mod = kv.mod_revision();
        }
      }
      while (!ctx->IsCancelled() && store_->mvcc()->current_rev() <= seen) {
        store_->WaitRevisionAbove(
            seen, std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
      }
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "context canceled");
  }

  static grpc::Status MissingLeader() {
    return grpc::Status(grpc::StatusCode::UNKNOWN, "\"leader\" field must be provided");
  }

  absl::Status SetLeaderValue(const std::string& key, int64_t rev, int64_t lease,
                              const std::string& value, ResponseHeader* header) {
    TxnRequest t;
    *t.add_compare() = CreateRevisionIs(key, rev);
    auto* put = t.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    put->set_lease(lease);
    ASSIGN_OR_RETURN(TxnResponse tr, Txn(store_, t));
    if (!tr.succeeded()) return ErrElectionNotLeader();
    if (header != nullptr) *header = tr.header();
    return absl::OkStatus();
  }

  absl::Status DeleteLeaderKey(const std::string& key, int64_t rev, ResponseHeader* header) {
    TxnRequest t;
    *t.add_compare() = CreateRevisionIs(key, rev);
    t.add_success()->mutable_request_delete_range()->set_key(key);
    ASSIGN_OR_RETURN(TxnResponse tr, Txn(store_, t));
    if (header != nullptr) *header = tr.header();
    return absl::OkStatus();
  }

  Store* store_;
  BlockingCalls calls_;  // last: destroyed (joined) first
};

}  // namespace

std::unique_ptr<grpc::Service> NewLockService(Store* store) {
  return std::make_unique<LockService>(store);
}

std::unique_ptr<grpc::Service> NewElectionService(Store* store) {
  return std::make_unique<ElectionService>(store);
}

}  // namespace capstan::store
