#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "store/errors.h"
#include "store/kv_ops.h"
#include "store/services.h"
#include "store/validate.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;

class KvService final : public KV::CallbackService {
 public:
  explicit KvService(Store* store) : store_(store) {}

  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx, const RangeRequest* req,
                                  RangeResponse* resp) override {
    absl::Status st = CheckRangeRequest(*req);
    if (!st.ok()) return FinishNow(ctx, st);
    if (req->serializable()) {
      st = store_->applier()->Range(*req, resp);
      if (st.ok()) store_->FillHeader(resp->mutable_header());
      return FinishNow(ctx, st);
    }
    // Linearizable: read once this member has applied everything committed
    // before the request arrived (ReadIndex), on any member.
    auto* reactor = ctx->DefaultReactor();
    store_->LinearizableRead([this, req, resp, reactor](absl::Status st) {
      if (st.ok()) st = store_->applier()->Range(*req, resp);
      if (st.ok()) store_->FillHeader(resp->mutable_header());
      reactor->Finish(ToGrpc(st));
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const PutRequest* req,
                                PutResponse* resp) override {
    absl::Status st = CheckPutRequest(*req);
    if (st.ok()) st = store_->CheckQuota(PutCost(*req));
    if (!st.ok()) return FinishNow(ctx, st);
    LogEntry entry;
    *entry.mutable_put() = *req;
    return Propose(ctx, std::move(entry), resp);
  }

  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext* ctx,
                                        const DeleteRangeRequest* req,
                                        DeleteRangeResponse* resp) override {
    absl::Status st = CheckDeleteRequest(*req);
    if (!st.ok()) return FinishNow(ctx, st);
    LogEntry entry;
    *entry.mutable_delete_range() = *req;
    return Propose(ctx, std::move(entry), resp);
  }

  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx, const TxnRequest* req,
                                TxnResponse* resp) override {
    absl::Status st = CheckTxn(*req, store_->options().max_txn_ops);
    if (st.ok() && IsTxnReadOnly(*req)) {
      // Read-only txns need no log entry (as in etcd), only a read index.
      auto* reactor = ctx->DefaultReactor();
      store_->LinearizableRead([this, req, resp, reactor](absl::Status st) {
        if (st.ok()) st = store_->applier()->ReadOnlyTxn(*req, resp);
        if (st.ok()) store_->FillHeader(resp->mutable_header());
        reactor->Finish(ToGrpc(st));
      });
      return reactor;
    }
    if (st.ok()) {
      size_t cost = TxnCost(*req);
      if (cost > 0) st = store_->CheckQuota(cost);
    }
    if (!st.ok()) return FinishNow(ctx, st);
    LogEntry entry;
    *entry.mutable_txn() = *req;
    return Propose(ctx, std::move(entry), resp);
  }

  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx, const CompactionRequest* req,
                                    CompactionResponse* resp) override {
    LogEntry entry;
    *entry.mutable_compaction() = *req;
    return Propose(ctx, std::move(entry), resp);
  }

 private:
  template <typename Resp>
  grpc::ServerUnaryReactor* Propose(grpc::CallbackServerContext* ctx, LogEntry entry, Resp* resp) {
    auto* reactor = ctx->DefaultReactor();
    ProposeAndFinish(store_, std::move(entry), reactor, resp);
    return reactor;
  }

  Store* store_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewKvService(Store* store) {
  return std::make_unique<KvService>(store);
}

}  // namespace capstan::store
