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
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = CheckRangeRequest(*req);
    if (st.ok()) st = store_->applier()->Range(*req, resp);
    if (st.ok()) store_->FillHeader(resp->mutable_header());
    reactor->Finish(ToGrpc(st));
    return reactor;
  }

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const PutRequest* req,
                                PutResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = CheckPutRequest(*req);
    if (st.ok()) st = store_->CheckQuota(PutCost(*req));
    if (!st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    LogEntry entry;
    *entry.mutable_put() = *req;
    ProposeAndFinish(std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext* ctx,
                                        const DeleteRangeRequest* req,
                                        DeleteRangeResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = CheckDeleteRequest(*req);
    if (!st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    LogEntry entry;
    *entry.mutable_delete_range() = *req;
    ProposeAndFinish(std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx, const TxnRequest* req,
                                TxnResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::Status st = CheckTxn(*req, store_->options().max_txn_ops);
    if (st.ok() && IsTxnReadOnly(*req)) {
      // Read-only txns need no log entry (as in etcd).
      st = store_->applier()->ReadOnlyTxn(*req, resp);
      if (st.ok()) store_->FillHeader(resp->mutable_header());
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    if (st.ok()) {
      size_t cost = TxnCost(*req);
      if (cost > 0) st = store_->CheckQuota(cost);
    }
    if (!st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    LogEntry entry;
    *entry.mutable_txn() = *req;
    ProposeAndFinish(std::move(entry), reactor, resp);
    return reactor;
  }

  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx,
                                    const CompactionRequest* req,
                                    CompactionResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    LogEntry entry;
    *entry.mutable_compaction() = *req;
    ProposeAndFinish(std::move(entry), reactor, resp);
    return reactor;
  }

 private:
  template <typename Resp>
  void ProposeAndFinish(LogEntry entry, grpc::ServerUnaryReactor* reactor, Resp* resp) {
    store_->Propose(std::move(entry), [this, reactor, resp](absl::Status st,
                                                            google::protobuf::Message* msg) {
      if (st.ok() && msg != nullptr) {
        resp->Swap(static_cast<Resp*>(msg));
        store_->FillHeader(resp->mutable_header());
      }
      reactor->Finish(ToGrpc(st));
    });
  }

  Store* store_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewKvService(Store* store) {
  return std::make_unique<KvService>(store);
}

}  // namespace capstan::store
