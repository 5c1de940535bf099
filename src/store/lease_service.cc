#include <deque>
#include <mutex>
#include <random>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "store/errors.h"
#include "store/services.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;

// LeaseKeepAlive: one response per request, in order. The leader holds the
// authoritative expiry times, so a follower forwards each renewal to it.
class KeepAliveReactor final
    : public grpc::ServerBidiReactor<LeaseKeepAliveRequest, LeaseKeepAliveResponse> {
 public:
  explicit KeepAliveReactor(Store* store) : store_(store) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();
    if (store_->node()->IsLeader()) {
      response_.set_id(request_.id());
      auto ttl = store_->lessor()->Renew(request_.id());
      response_.set_ttl(ttl.ok() ? *ttl : 0);  // 0 tells the client the lease is gone
      store_->FillHeader(response_.mutable_header(), 0);
      StartWrite(&response_);
      return;
    }
    auto stub = store_->LeaderStub();
    if (!stub) {
      Finish(ToGrpc(ErrNoLeader()));
      return;
    }
    forward_ctx_ = std::make_unique<grpc::ClientContext>();
    forward_ctx_->set_deadline(std::chrono::system_clock::now() +
                               store_->options().request_timeout);
    stub->async()->LeaseKeepAlive(forward_ctx_.get(), &request_, &response_,
                                  [this](grpc::Status st) {
                                    if (!st.ok()) {
                                      Finish(st);
                                      return;
                                    }
                                    store_->FillHeader(response_.mutable_header(), 0);
                                    StartWrite(&response_);
                                  });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "keepalive stream write failed"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  Store* store_;
  LeaseKeepAliveRequest request_;
  LeaseKeepAliveResponse response_;
  std::unique_ptr<grpc::ClientContext> forward_ctx_;
};

class LeaseService final : public Lease::CallbackService {
 public:
  explicit LeaseService(Store* store) : store_(store), rng_(std::random_device{}()) {}

  grpc::ServerUnaryReactor* LeaseGrant(grpc::CallbackServerContext* ctx,
                                       const LeaseGrantRequest* req,
                                       LeaseGrantResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = store_->CheckQuota(64);
    if (!st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    LogEntry entry;
    *entry.mutable_lease_grant() = *req;
    if (req->id() == 0) {
      // The proposer picks the ID so that applying the entry is deterministic.
      std::lock_guard<std::mutex> lock(rng_mu_);
      int64_t id;
      do {
        id = static_cast<int64_t>(rng_() & 0x7fffffffffffffffull);
      } while (id == 0 || store_->lessor()->Exists(id));
      entry.mutable_lease_grant()->set_id(id);
    }
    Propose(std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerUnaryReactor* LeaseRevoke(grpc::CallbackServerContext* ctx,
                                        const LeaseRevokeRequest* req,
                                        LeaseRevokeResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    LogEntry entry;
    *entry.mutable_lease_revoke() = *req;
    Propose(std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerBidiReactor<LeaseKeepAliveRequest, LeaseKeepAliveResponse>* LeaseKeepAlive(
      grpc::CallbackServerContext*) override {
    return new KeepAliveReactor(store_);
  }

  grpc::ServerUnaryReactor* LeaseTimeToLive(grpc::CallbackServerContext* ctx,
                                            const LeaseTimeToLiveRequest* req,
                                            LeaseTimeToLiveResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    if (store_->node()->IsLeader()) {
      reactor->Finish(ToGrpc(FillTimeToLive(store_, *req, resp)));
      return reactor;
    }
    auto stub = store_->LeaderStub();
    if (!stub) {
      reactor->Finish(ToGrpc(ErrNoLeader()));
      return reactor;
    }
    auto forward = std::make_shared<grpc::ClientContext>();
    forward->set_deadline(std::chrono::system_clock::now() + store_->options().request_timeout);
    stub->async()->LeaseTimeToLive(forward.get(), req, resp,
                                   [this, forward, reactor, resp](grpc::Status st) {
                                     if (st.ok()) store_->FillHeader(resp->mutable_header(), 0);
                                     reactor->Finish(st);
                                   });
    return reactor;
  }

  grpc::ServerUnaryReactor* LeaseLeases(grpc::CallbackServerContext* ctx, const LeaseLeasesRequest*,
                                        LeaseLeasesResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    for (int64_t id : store_->lessor()->Leases()) resp->add_leases()->set_id(id);
    store_->FillHeader(resp->mutable_header(), 0);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  template <typename Resp>
  void Propose(LogEntry entry, grpc::ServerUnaryReactor* reactor, Resp* resp) {
    ProposeAndFinish(store_, std::move(entry), reactor, resp);
  }

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

std::unique_ptr<grpc::Service> NewLeaseService(Store* store) {
  return std::make_unique<LeaseService>(store);
}

}  // namespace capstan::store
