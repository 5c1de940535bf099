// v3lock and v3election, implemented inside the server on top of the KV store
// the way etcd implements them (etcd runs its clientv3/concurrency recipes
// against itself): a waiter puts a key under the name's prefix with its lease,
// and holds the lock (or leadership) once every key created before it is gone.
// A call that waits (Lock, Campaign, Observe) is a coroutine on the loop
// that owns its connection: it proposes from the loop, reads local state
// there, and parks until the revision moves on (Store::OnRevisionAbove) or
// the client goes away. No thread is held while it waits.
#include <coroutine>

#include "absl/strings/str_format.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/v3electionpb/v3election.grpc.pb.h"
#include "etcd/v3lockpb/v3lock.grpc.pb.h"
#include "store/errors.h"
#include "store/native_call.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCallPtr;

// What a waiting call's coroutine shares with the call's handler (loop
// thread only): whether the call is over, and the coroutine parked until
// something changes (a new revision, room to write, the end of the call).
struct CallState {
  CallState(Store* s, GrpcCallPtr c) : store(s), call(std::move(c)) {}
  Store* store;
  GrpcCallPtr call;
  bool done = false;
  std::coroutine_handle<> parked;

  net::EventLoop* loop() const { return call->loop(); }
  // Resumes the parked coroutine, if any, in this turn or the next. A
  // wake-up that comes late (for an earlier wait) only makes it look again.
  void Wake() {
    if (parked) loop()->Schedule(std::exchange(parked, nullptr));
  }
};

// co_await RevisionAbove{state, rev}: resumes once the store's revision is
// above `rev` or the call is over.
struct RevisionAbove {
  std::shared_ptr<CallState> state;
  int64_t rev;
  bool await_ready() const { return state->done || state->store->mvcc()->current_rev() > rev; }
  void await_suspend(std::coroutine_handle<> h) {
    state->parked = h;
    state->store->OnRevisionAbove(
        rev, [state = state] { state->loop()->Post([state] { state->Wake(); }); });
  }
  void await_resume() const noexcept {}
};

// co_await Room{state}: resumes once the call can take more output or is over.
struct Room {
  std::shared_ptr<CallState> state;
  bool await_ready() const { return state->done; }
  void await_suspend(std::coroutine_handle<> h) { state->parked = h; }
  void await_resume() const noexcept {}
};

// co_await Proposed<Resp>{store, loop, entry}: proposes from the loop and
// resumes there with the applied result. The result lives apart from the
// coroutine frame: a frame destroyed at shutdown is never written.
template <typename Resp>
struct Proposed {
  struct Result {
    absl::Status status;
    Resp resp;
  };
  Proposed(Store* s, net::EventLoop* l, LogEntry e)
      : store(s), loop(l), entry(std::move(e)), result(std::make_shared<Result>()) {}

  Store* store;
  net::EventLoop* loop;
  LogEntry entry;
  std::shared_ptr<Result> result;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    store->ProposeFromLoop(
        std::move(entry),
        [result = result, loop = loop, h](absl::Status st, google::protobuf::Message* msg) {
          result->status = st;
          if (st.ok() && msg != nullptr) result->resp.Swap(static_cast<Resp*>(msg));
          loop->Post([h] { h.resume(); });
        },
        loop);
  }
  absl::StatusOr<Resp> await_resume() {
    if (!result->status.ok()) return result->status;
    return std::move(result->resp);
  }
};

net::Task<absl::StatusOr<TxnResponse>> Txn(Store* store, net::EventLoop* loop, TxnRequest req) {
  LogEntry e;
  *e.mutable_txn() = std::move(req);
  // A named awaiter: GCC 12 mishandles an aggregate temporary that owns
  // memory inside a co_await expression.
  Proposed<TxnResponse> proposal(store, loop, std::move(e));
  absl::StatusOr<TxnResponse> resp = co_await proposal;
  if (resp.ok()) store->FillHeader(resp->mutable_header());
  co_return resp;
}

net::Task<absl::StatusOr<DeleteRangeResponse>> Delete(Store* store, net::EventLoop* loop,
                                                      std::string key) {
  LogEntry e;
  e.mutable_delete_range()->set_key(std::move(key));
  Proposed<DeleteRangeResponse> proposal(store, loop, std::move(e));
  absl::StatusOr<DeleteRangeResponse> resp = co_await proposal;
  if (resp.ok()) store->FillHeader(resp->mutable_header());
  co_return resp;
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
net::Task<absl::StatusOr<ResponseHeader>> WaitDeletes(std::shared_ptr<CallState> state,
                                                      std::string prefix, int64_t max_create_rev) {
  while (true) {
    absl::StatusOr<RangeResponse> r = Get(state->store, ByCreate(prefix, false, max_create_rev));
    if (!r.ok()) co_return r.status();
    if (r->kvs().empty()) co_return r->header();
    if (state->done) co_return absl::CancelledError("context canceled");
    RevisionAbove moved{state, r->header().revision()};
    co_await moved;
    if (state->done) co_return absl::CancelledError("context canceled");
  }
}

// The error gRPC gives a request that does not parse.
absl::Status Unparsable() {
  return absl::InternalError(
      "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data");
}

// A call served by a coroutine (registered as a stream: the wire is the
// same, and the handler hears when the client goes away). The coroutine
// starts with the request and ends the call itself.
class CoroutineCall final : public net::GrpcStreamHandler {
 public:
  using Body = net::Task<void> (*)(std::shared_ptr<CallState>, Buffer);
  CoroutineCall(Store* store, GrpcCallPtr call, Body body)
      : state_(std::make_shared<CallState>(store, std::move(call))), body_(body) {}

  void OnMessage(Buffer bytes) override {
    if (started_) return;  // one request per call
    started_ = true;
    state_->loop()->StartOwned(body_(state_, std::move(bytes)));
  }
  void OnHalfClose() override {
    if (!started_) state_->call->Finish(Unparsable());
  }
  void OnWriteRoom() override { state_->Wake(); }
  void OnDone(bool) override {
    state_->done = true;
    state_->Wake();
  }

 private:
  std::shared_ptr<CallState> state_;
  Body body_;
  bool started_ = false;
};

// ---- Lock

net::Task<void> Lock(std::shared_ptr<CallState> state, Buffer bytes) {
  v3lockpb::LockRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  Store* store = state->store;
  std::string prefix = req.name() + "/";
  std::string key = WaiterKey(req.name(), req.lease());
  TxnRequest t = CreateOrGet(key, "", req.lease());
  // Also fetch the current holder, to finish the uncontended case in one txn.
  *t.add_success()->mutable_request_range() = ByCreate(prefix, true);
  *t.add_failure()->mutable_request_range() = ByCreate(prefix, true);
  absl::StatusOr<TxnResponse> tr = co_await Txn(store, state->loop(), std::move(t));
  if (!tr.ok()) co_return state->call->Finish(tr.status());
  int64_t my_rev = tr->header().revision();
  if (!tr->succeeded()) my_rev = tr->responses(0).response_range().kvs(0).create_revision();
  v3lockpb::LockResponse resp;
  resp.set_key(key);
  const auto& owner = tr->responses(1).response_range().kvs();
  if (owner.empty() || owner[0].create_revision() == my_rev) {
    *resp.mutable_header() = tr->header();
    co_return Reply(state->call, resp);
  }
  absl::StatusOr<ResponseHeader> header = co_await WaitDeletes(state, prefix, my_rev - 1);
  if (!header.ok()) {
    // Give up our place in line; the lease ends it anyway.
    (void)co_await Delete(store, state->loop(), key);
    co_return state->call->Finish(header.status());
  }
  *resp.mutable_header() = *header;
  Reply(state->call, resp);
}

net::Task<void> Unlock(std::shared_ptr<CallState> state, Buffer bytes) {
  v3lockpb::UnlockRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  absl::StatusOr<DeleteRangeResponse> d = co_await Delete(state->store, state->loop(), req.key());
  if (!d.ok()) co_return state->call->Finish(d.status());
  v3lockpb::UnlockResponse resp;
  *resp.mutable_header() = d->header();
  Reply(state->call, resp);
}

// ---- Election

absl::Status MissingLeader() { return absl::UnknownError("\"leader\" field must be provided"); }

// Sets the leader key's value while it is still the same key (created at
// rev); fails when leadership was lost.
net::Task<absl::Status> SetLeaderValue(std::shared_ptr<CallState> state, std::string key,
                                       int64_t rev, int64_t lease, std::string value,
                                       ResponseHeader* header) {
  TxnRequest t;
  *t.add_compare() = CreateRevisionIs(key, rev);
  auto* put = t.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(std::move(value));
  put->set_lease(lease);
  absl::StatusOr<TxnResponse> tr = co_await Txn(state->store, state->loop(), std::move(t));
  if (!tr.ok()) co_return tr.status();
  if (!tr->succeeded()) co_return ErrElectionNotLeader();
  if (header != nullptr) *header = tr->header();
  co_return absl::OkStatus();
}

net::Task<absl::Status> DeleteLeaderKey(std::shared_ptr<CallState> state, std::string key,
                                        int64_t rev, ResponseHeader* header) {
  TxnRequest t;
  *t.add_compare() = CreateRevisionIs(key, rev);
  t.add_success()->mutable_request_delete_range()->set_key(key);
  absl::StatusOr<TxnResponse> tr = co_await Txn(state->store, state->loop(), std::move(t));
  if (!tr.ok()) co_return tr.status();
  if (header != nullptr) *header = tr->header();
  co_return absl::OkStatus();
}

net::Task<void> Campaign(std::shared_ptr<CallState> state, Buffer bytes) {
  v3electionpb::CampaignRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  std::string prefix = req.name() + "/";
  std::string key = WaiterKey(req.name(), req.lease());
  TxnRequest create = CreateOrGet(key, req.value(), req.lease());
  absl::StatusOr<TxnResponse> tr = co_await Txn(state->store, state->loop(), std::move(create));
  if (!tr.ok()) co_return state->call->Finish(tr.status());
  int64_t leader_rev = tr->header().revision();
  if (!tr->succeeded()) {
    const auto& kv = tr->responses(0).response_range().kvs(0);
    leader_rev = kv.create_revision();
    if (kv.value() != req.value()) {
      absl::Status st =
          co_await SetLeaderValue(state, key, leader_rev, req.lease(), req.value(), nullptr);
      if (!st.ok()) {
        (void)co_await DeleteLeaderKey(state, key, leader_rev, nullptr);
        co_return state->call->Finish(st);
      }
    }
  }
  absl::StatusOr<ResponseHeader> waited = co_await WaitDeletes(state, prefix, leader_rev - 1);
  if (!waited.ok()) {
    if (state->done) (void)co_await DeleteLeaderKey(state, key, leader_rev, nullptr);
    co_return state->call->Finish(waited.status());
  }
  v3electionpb::CampaignResponse resp;
  *resp.mutable_header() = tr->header();
  auto* leader = resp.mutable_leader();
  leader->set_name(req.name());
  leader->set_key(key);
  leader->set_rev(leader_rev);
  leader->set_lease(req.lease());
  Reply(state->call, resp);
}

net::Task<void> Proclaim(std::shared_ptr<CallState> state, Buffer bytes) {
  v3electionpb::ProclaimRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  if (!req.has_leader()) co_return state->call->Finish(MissingLeader());
  const auto& l = req.leader();
  v3electionpb::ProclaimResponse resp;
  absl::Status st = co_await SetLeaderValue(state, l.key(), l.rev(), l.lease(), req.value(),
                                            resp.mutable_header());
  if (!st.ok()) co_return state->call->Finish(st);
  Reply(state->call, resp);
}

net::Task<void> Resign(std::shared_ptr<CallState> state, Buffer bytes) {
  v3electionpb::ResignRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  if (!req.has_leader()) co_return state->call->Finish(MissingLeader());
  v3electionpb::ResignResponse resp;
  absl::Status st = co_await DeleteLeaderKey(state, req.leader().key(), req.leader().rev(),
                                             resp.mutable_header());
  if (!st.ok()) co_return state->call->Finish(st);
  Reply(state->call, resp);
}

// The current leader: the key under the name created first.
absl::StatusOr<v3electionpb::LeaderResponse> CurrentLeader(Store* store, const std::string& name) {
  ASSIGN_OR_RETURN(RangeResponse r, Get(store, ByCreate(name + "/", true)));
  if (r.kvs().empty()) return ErrElectionNoLeader();
  v3electionpb::LeaderResponse resp;
  *resp.mutable_header() = r.header();
  *resp.mutable_kv() = r.kvs(0);
  return resp;
}

// Sends the leader each time it changes (another key, or a new value),
// until the client goes away.
net::Task<void> Observe(std::shared_ptr<CallState> state, Buffer bytes) {
  v3electionpb::LeaderRequest req;
  if (!ParseFrom(bytes, &req)) co_return state->call->Finish(Unparsable());
  std::string prefix = req.name() + "/";
  std::string last_key;
  int64_t last_mod = 0;
  while (!state->done) {
    absl::StatusOr<RangeResponse> r = Get(state->store, ByCreate(prefix, true));
    if (!r.ok()) co_return state->call->Finish(r.status());
    if (!r->kvs().empty()) {
      const auto& kv = r->kvs(0);
      if (kv.key() != last_key || kv.mod_revision() != last_mod) {
        v3electionpb::LeaderResponse out;
        *out.mutable_header() = r->header();
        *out.mutable_kv() = kv;
        last_key = kv.key();
        last_mod = kv.mod_revision();
        if (!state->call->WriteFramed(Serialize(out))) {
          Room room{state};
          co_await room;
        }
        if (state->done) break;
      }
    }
    RevisionAbove moved{state, r->header().revision()};
    co_await moved;
  }
  state->call->Finish(absl::CancelledError("context canceled"));  // nobody hears it
}

}  // namespace

void AddNativeConcurrency(Store* store, MethodTable* server) {
  auto add = [&](std::string path, CoroutineCall::Body body) {
    server->AddStream(std::move(path), [store, body](const GrpcCallPtr& call) {
      return std::make_unique<CoroutineCall>(store, call, body);
    });
  };
  add("/v3lockpb.Lock/Lock", &Lock);
  add("/v3lockpb.Lock/Unlock", &Unlock);
  add("/v3electionpb.Election/Campaign", &Campaign);
  add("/v3electionpb.Election/Proclaim", &Proclaim);
  add("/v3electionpb.Election/Resign", &Resign);
  add("/v3electionpb.Election/Observe", &Observe);
  server->AddUnary("/v3electionpb.Election/Leader", [store](const GrpcCallPtr& call, Buffer bytes) {
    v3electionpb::LeaderRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    absl::StatusOr<v3electionpb::LeaderResponse> resp = CurrentLeader(store, req.name());
    if (!resp.ok()) return call->Finish(resp.status());
    Reply(call, *resp);
  });
}

}  // namespace capstan::store
