#include <deque>
#include <mutex>
#include <random>

#include "capstan/peer.grpc.pb.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "store/errors.h"
#include "store/native_call.h"
#include "store/services.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCallPtr;

// LeaseKeepAlive: one response per request, in order. The leader holds the
// authoritative expiry times, so a follower forwards each renewal to it
// (one at a time, which keeps the order).
class KeepAliveStream final : public net::GrpcStreamHandler {
 public:
  KeepAliveStream(Store* store, GrpcCallPtr call)
      : state_(std::make_shared<State>(store, std::move(call))) {}

  void OnMessage(Buffer bytes) override {
    LeaseKeepAliveRequest req;
    if (!ParseFrom(bytes, &req)) {
      state_->call->Finish(
          absl::InternalError("grpc: error unmarshalling request: proto: "
                              "cannot parse invalid wire-format data"));
      return;
    }
    state_->queue.push_back(std::move(req));
    if (!state_->forwarding) Serve(state_);
  }
  // The client is done: finish once the renewals it sent are answered.
  void OnHalfClose() override {
    state_->half_closed = true;
    if (!state_->forwarding) Serve(state_);
  }
  void OnDone(bool) override { state_->done = true; }

 private:
  // Loop thread only; shared with a forward in flight.
  struct State {
    State(Store* s, GrpcCallPtr c) : store(s), call(std::move(c)) {}
    Store* store;
    GrpcCallPtr call;
    std::deque<LeaseKeepAliveRequest> queue;
    bool forwarding = false;
    bool half_closed = false;
    bool done = false;
  };

  static void Serve(const std::shared_ptr<State>& state) {
    Store* store = state->store;
    while (!state->done && !state->queue.empty()) {
      LeaseKeepAliveRequest& req = state->queue.front();
      LeaseKeepAliveResponse resp;
      if (store->node()->IsLeader()) {
        resp.set_id(req.id());
        auto ttl = store->lessor()->Renew(req.id());
        resp.set_ttl(ttl.ok() ? *ttl : 0);  // 0 tells the client the lease is gone
        store->FillHeader(resp.mutable_header(), 0);
        state->queue.pop_front();
        state->call->WriteFramed(Serialize(resp));
        continue;
      }
      Forward(state);
      return;
    }
    if (state->half_closed && !state->done) state->call->Finish(absl::OkStatus());
  }

  static void Forward(const std::shared_ptr<State>& state) {
    Store* store = state->store;
    auto stub = store->LeaderStub();
    if (!stub) {
      state->call->Finish(ErrNoLeader());
      return;
    }
    struct Forwarded {
      grpc::ClientContext ctx;
      LeaseKeepAliveRequest req;
      LeaseKeepAliveResponse resp;
    };
    auto fwd = std::make_shared<Forwarded>();
    fwd->req = std::move(state->queue.front());
    state->queue.pop_front();
    fwd->ctx.set_deadline(std::chrono::system_clock::now() + store->options().request_timeout);
    state->forwarding = true;
    stub->async()->LeaseKeepAlive(&fwd->ctx, &fwd->req, &fwd->resp,
                                  [state, fwd, stub](grpc::Status st) {
                                    state->call->loop()->Post([state, fwd, st] {
                                      state->forwarding = false;
                                      if (state->done) return;
                                      if (!st.ok()) {
                                        state->call->Finish(FromGrpc(st));
                                        return;
                                      }
                                      state->store->FillHeader(fwd->resp.mutable_header(), 0);
                                      state->call->WriteFramed(Serialize(fwd->resp));
                                      Serve(state);
                                    });
                                  });
  }

  std::shared_ptr<State> state_;
};

class NativeLease {
 public:
  explicit NativeLease(Store* store) : store_(store), rng_(std::random_device{}()) {}

  void Grant(const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    LeaseGrantRequest* req = entry.mutable_lease_grant();
    if (!ParseRequest(call, bytes, req)) return;
    absl::Status st = store_->CheckQuota(64);
    if (!st.ok()) return call->Finish(st);
    if (req->id() == 0) {
      // The proposer picks the ID so that applying the entry is deterministic.
      std::lock_guard<std::mutex> lock(rng_mu_);
      int64_t id;
      do {
        id = static_cast<int64_t>(rng_() & 0x7fffffffffffffffull);
      } while (id == 0 || store_->lessor()->Exists(id));
      req->set_id(id);
    }
    ProposeAndAnswer<LeaseGrantResponse>(store_, call, std::move(entry));
  }

  void Revoke(const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    if (!ParseRequest(call, bytes, entry.mutable_lease_revoke())) return;
    ProposeAndAnswer<LeaseRevokeResponse>(store_, call, std::move(entry));
  }

  void TimeToLive(const GrpcCallPtr& call, Buffer bytes) {
    struct Forwarded {
      grpc::ClientContext ctx;
      LeaseTimeToLiveRequest req;
      LeaseTimeToLiveResponse resp;
    };
    auto fwd = std::make_shared<Forwarded>();
    if (!ParseRequest(call, bytes, &fwd->req)) return;
    if (store_->node()->IsLeader()) {
      LeaseTimeToLiveResponse resp;
      absl::Status st = FillTimeToLive(store_, fwd->req, &resp);
      if (!st.ok()) return call->Finish(st);
      return Reply(call, resp);
    }
    auto stub = store_->LeaderStub();
    if (!stub) return call->Finish(ErrNoLeader());
    fwd->ctx.set_deadline(std::chrono::system_clock::now() + store_->options().request_timeout);
    stub->async()->LeaseTimeToLive(&fwd->ctx, &fwd->req, &fwd->resp,
                                   [store = store_, call, fwd, stub](grpc::Status st) {
                                     if (st.ok()) store->FillHeader(fwd->resp.mutable_header(), 0);
                                     AnswerAsIs(call, FromGrpc(st), fwd->resp);
                                   });
  }

  void Leases(const GrpcCallPtr& call, Buffer bytes) {
    LeaseLeasesRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    LeaseLeasesResponse resp;
    for (int64_t id : store_->lessor()->Leases()) resp.add_leases()->set_id(id);
    store_->FillHeader(resp.mutable_header(), 0);
    Reply(call, resp);
  }

 private:
  Store* store_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_;
};

}  // namespace

absl::Status FillTimeToLive(Store* store, const LeaseTimeToLiveRequest& req,
                            LeaseTimeToLiveResponse* resp) {
  resp->set_id(req.id());
  auto info = store->lessor()->TimeToLive(req.id());
  if (!info.ok()) {
    resp->set_ttl(-1);  // etcd answers an unknown lease with TTL -1, not an error
  } else {
    resp->set_ttl(info->ttl_remaining);
    resp->set_grantedttl(info->granted_ttl);
    if (req.keys()) {
      for (auto& k : info->keys) resp->add_keys(std::move(k));
    }
  }
  store->FillHeader(resp->mutable_header(), 0);
  return absl::OkStatus();
}

void AddNativeLease(Store* store, MethodTable* server) {
  auto lease = std::make_shared<NativeLease>(store);
  auto add = [&](const char* name, void (NativeLease::*fn)(const GrpcCallPtr&, Buffer)) {
    server->AddUnary(std::string("/etcdserverpb.Lease/") + name,
                     [lease, fn](const GrpcCallPtr& call, Buffer bytes) {
                       ((*lease).*fn)(call, std::move(bytes));
                     });
  };
  add("LeaseGrant", &NativeLease::Grant);
  add("LeaseRevoke", &NativeLease::Revoke);
  add("LeaseTimeToLive", &NativeLease::TimeToLive);
  add("LeaseLeases", &NativeLease::Leases);
  server->AddStream("/etcdserverpb.Lease/LeaseKeepAlive", [store](const GrpcCallPtr& call) {
    return std::make_unique<KeepAliveStream>(store, call);
  });
}

}  // namespace capstan::store
