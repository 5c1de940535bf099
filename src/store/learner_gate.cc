#include "store/learner_gate.h"

#include "etcd/etcdserverpb/rpc.pb.h"
#include "store/native_call.h"
#include "store/store.h"

namespace capstan::store {
namespace {

// Ends a refused stream at once and ignores whatever the client still sends.
class RefusedStream final : public net::GrpcStreamHandler {
 public:
  void OnMessage(net::Buffer) override {}
};

}  // namespace

absl::Status ErrRpcNotSupportedForLearner() {
  return absl::UnavailableError("etcdserver: rpc not supported for learner");
}

bool LearnerMayServe(std::string_view path, net::Buffer* request) {
  if (path == "/etcdserverpb.Maintenance/Status") return true;
  if (path == "/etcdserverpb.KV/Range" && request != nullptr) {
    etcdserverpb::RangeRequest range;
    return ParseFrom(*request, &range) && range.serializable();
  }
  return false;
}

void InstallLearnerGate(Store* store, net::GrpcServer* server) {
  server->WrapMethods(
      [store](const std::string& path, net::GrpcUnaryHandler handler) -> net::GrpcUnaryHandler {
        return [store, path, handler = std::move(handler)](const net::GrpcCallPtr& call,
                                                           net::Buffer bytes) {
          if (store->IsLearner() && !LearnerMayServe(path, &bytes)) {
            return call->Finish(ErrRpcNotSupportedForLearner());
          }
          handler(call, std::move(bytes));
        };
      },
      [store](const std::string& path, net::GrpcStreamFactory factory) -> net::GrpcStreamFactory {
        return [store, path, factory = std::move(factory)](
                   const net::GrpcCallPtr& call) -> std::unique_ptr<net::GrpcStreamHandler> {
          if (store->IsLearner() && !LearnerMayServe(path, nullptr)) {
            call->Finish(ErrRpcNotSupportedForLearner());
            return std::make_unique<RefusedStream>();
          }
          return factory(call);
        };
      });
}

}  // namespace capstan::store
