#include "bench/null_server.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "base/signals.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace capstan::bench {
namespace {

using namespace etcdserverpb;

class NullKv final : public KV::CallbackService {
 public:
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx, const RangeRequest*,
                                  RangeResponse* resp) override {
    return Done(ctx, resp->mutable_header());
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const PutRequest*,
                                PutResponse* resp) override {
    return Done(ctx, resp->mutable_header());
  }
  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext* ctx, const DeleteRangeRequest*,
                                        DeleteRangeResponse* resp) override {
    return Done(ctx, resp->mutable_header());
  }
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx, const TxnRequest*,
                                TxnResponse* resp) override {
    resp->set_succeeded(true);
    return Done(ctx, resp->mutable_header());
  }

 private:
  // A header like the store's, so responses have the same size on the wire.
  grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, ResponseHeader* header) {
    header->set_cluster_id(0x1234567890abcdefull);
    header->set_member_id(0xfedcba0987654321ull);
    header->set_revision(++revision_);
    header->set_raft_term(2);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::atomic<int64_t> revision_{1};
};

}  // namespace

absl::Status RunNullServer(const NullServerOptions& options) {
  NullKv kv;
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(2 * 1024 * 1024);
  builder.SetMaxSendMessageSize(INT_MAX);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&kv);
  auto server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (is the port in use?)"));
  }
  WaitForTerminationSignal();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace capstan::bench
