#include "store/auth_gate.h"

#include "base/logging.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "store/native_call.h"
#include "store/store.h"

namespace capstan::store {
namespace {

using net::Buffer;
using net::GrpcCallPtr;

constexpr char kWatchPath[] = "/etcdserverpb.Watch/Watch";

// A streaming call behind the gate: each request message is checked before
// the method's own handler sees it. A refused Watch create gets etcd's
// answer (a created-and-cancelled response naming the error) and the stream
// goes on; any other refused stream ends with the error.
class GatedStream final : public net::GrpcStreamHandler {
 public:
  GatedStream(std::shared_ptr<const AuthGate> gate, const AuthPolicy* policy, bool watch,
              GrpcCallPtr call, std::unique_ptr<net::GrpcStreamHandler> inner)
      : gate_(std::move(gate)),
        policy_(policy),
        watch_(watch),
        call_(std::move(call)),
        inner_(std::move(inner)) {}

  void OnMessage(Buffer message) override {
    if (refused_) return;
    AuthStore* auth = gate_->store()->auth();
    if (!auth->enabled()) return inner_->OnMessage(std::move(message));
    absl::StatusOr<AuthInfo> who = gate_->Identify(*call_);
    absl::Status st = who.status();
    if (st.ok()) {
      st = policy_ != nullptr ? (*policy_)(gate_->store(), *who, message) : ErrPermissionDenied();
    }
    if (!st.ok()) return Refuse(st);
    CallAuthScope scope(&*who);
    inner_->OnMessage(std::move(message));
  }
  void OnHalfClose() override {
    if (!refused_) inner_->OnHalfClose();
  }
  void OnWriteRoom() override { inner_->OnWriteRoom(); }
  void OnDone(bool cancelled) override { inner_->OnDone(cancelled); }

 private:
  void Refuse(const absl::Status& st) {
    if (watch_) {
      etcdserverpb::WatchResponse resp;
      gate_->store()->FillHeader(resp.mutable_header());
      resp.set_watch_id(-1);  // clientv3.InvalidWatchID
      resp.set_created(true);
      resp.set_canceled(true);
      resp.set_cancel_reason(std::string(st.message()));
      call_->WriteFramed(Serialize(resp));
      return;
    }
    refused_ = true;
    call_->Finish(st);
  }

  std::shared_ptr<const AuthGate> gate_;
  const AuthPolicy* policy_;
  bool watch_;
  GrpcCallPtr call_;
  std::unique_ptr<net::GrpcStreamHandler> inner_;
  bool refused_ = false;
};

// A method added without a policy would be refused to everyone once auth
// is on: a programming error, caught at start (every e2e test starts one).
void CheckHasPolicy(const std::string& path, const AuthPolicy* policy) {
  if (policy != nullptr) return;
  CAPSTAN_LOG(critical, "etcd API method has no auth policy (add it in auth_policy.cc)", "method",
              path);
  std::abort();
}

// Runs a unary handler for `who` if the method's policy lets it in.
void RunChecked(const AuthGate& gate, const AuthPolicy* policy,
                const net::GrpcUnaryHandler& handler, const GrpcCallPtr& call, const AuthInfo& who,
                Buffer bytes) {
  absl::Status st = policy != nullptr ? (*policy)(gate.store(), who, bytes) : ErrPermissionDenied();
  if (!st.ok()) return call->Finish(st);
  CallAuthScope scope(&who);
  handler(call, std::move(bytes));
}

// The same, resolving who calls first (auth may have been turned off).
void RunGated(const AuthGate& gate, const AuthPolicy* policy, const net::GrpcUnaryHandler& handler,
              const GrpcCallPtr& call, Buffer bytes) {
  if (!gate.store()->auth()->enabled()) return handler(call, std::move(bytes));
  absl::StatusOr<AuthInfo> who = gate.Identify(*call);
  if (!who.ok()) return call->Finish(who.status());
  RunChecked(gate, policy, handler, call, *who, std::move(bytes));
}

}  // namespace

AuthGate::AuthGate(Store* store) : store_(store), policies_(MakeAuthPolicies()) {}

bool AuthGate::IsOpen(std::string_view path) {
  return path == "/etcdserverpb.Auth/Authenticate" || path == "/etcdserverpb.Auth/AuthStatus";
}

const AuthPolicy* AuthGate::PolicyFor(std::string_view path) const {
  auto it = policies_.find(path);
  return it == policies_.end() ? nullptr : &it->second;
}

absl::StatusOr<AuthInfo> ResolveIdentity(AuthStore* auth, std::optional<std::string_view> token,
                                         bool via_gateway,
                                         const std::optional<std::string>& common_name) {
  if (token) return auth->InfoFromToken(*token);
  // etcd ignores the certificate of its own gRPC gateway's requests.
  if (!via_gateway && common_name && !common_name->empty()) return auth->InfoFromName(*common_name);
  return AuthInfo{};
}

absl::StatusOr<AuthInfo> AuthGate::Identify(const net::GrpcCall& call) const {
  std::optional<std::string_view> token = call.FindMetadata("token");
  if (!token) token = call.FindMetadata("authorization");  // etcd's gRPC-gateway name
  bool via_gateway = call.FindMetadata("grpcgateway-accept").has_value();
  std::optional<std::string> cn;
  if (!token && !via_gateway && peer_name_) cn = peer_name_(call);
  return ResolveIdentity(store_->auth(), token, via_gateway, cn);
}

std::vector<std::string> MethodTable::paths() const {
  std::vector<std::string> out;
  for (const auto& [path, h] : unary_) out.push_back(path);
  for (const auto& [path, f] : streams_) out.push_back(path);
  return out;
}

void MethodTable::InstallGated(std::shared_ptr<const AuthGate> gate, net::GrpcServer* server) {
  for (auto& [path, handler] : unary_) {
    if (AuthGate::IsOpen(path)) {
      server->AddUnary(path, std::move(handler));
      continue;
    }
    const AuthPolicy* policy = gate->PolicyFor(path);
    CheckHasPolicy(path, policy);
    auto shared_handler = std::make_shared<net::GrpcUnaryHandler>(std::move(handler));
    server->AddUnary(path, [gate, policy, shared_handler](const GrpcCallPtr& call, Buffer bytes) {
      if (!gate->store()->auth()->enabled()) return (*shared_handler)(call, std::move(bytes));
      absl::StatusOr<AuthInfo> who = gate->Identify(*call);
      if (who.status() == ErrInvalidAuthToken() &&
          !gate->store()->auth()->tokens_self_contained()) {
        // A token is assigned through the log: one issued by another member
        // moments ago may not be applied here yet. Wait until this member
        // has applied what was committed when the call came (etcd checks
        // after its read index too), then resolve it once more. Not for a
        // JWT: it is checked by its signature, no log entry can make it valid.
        auto held = std::make_shared<Buffer>(std::move(bytes));
        gate->store()->LinearizableRead([gate, policy, shared_handler, call,
                                         held](absl::Status st) {
          call->loop()->Post([gate, policy, shared_handler, call, held, st] {
            if (!st.ok()) return call->Finish(st);
            RunGated(*gate, policy, *shared_handler, call, std::move(*held));
          });
        });
        return;
      }
      if (!who.ok()) return call->Finish(who.status());
      RunChecked(*gate, policy, *shared_handler, call, *who, std::move(bytes));
    });
  }
  for (auto& [path, factory] : streams_) {
    const AuthPolicy* policy = gate->PolicyFor(path);
    CheckHasPolicy(path, policy);
    bool watch = path == kWatchPath;
    server->AddStream(path,
                      [gate, policy, watch, factory = std::move(factory)](
                          const GrpcCallPtr& call) -> std::unique_ptr<net::GrpcStreamHandler> {
                        return std::make_unique<GatedStream>(gate, policy, watch, call,
                                                             factory(call));
                      });
  }
  unary_.clear();
  streams_.clear();
}

uint64_t CheckedAuthRevision() {
  const AuthInfo* who = CallAuthScope::Current();
  return who != nullptr ? who->revision : 0;
}

absl::Status RecheckAuthRevision(Store* store, uint64_t checked) {
  if (!store->auth()->enabled()) return absl::OkStatus();
  // checked == 0: auth was off when the call came and is on now (this
  // member applied an enable while the read waited): the call was never
  // checked, so it must not be answered; the client retries.
  if (checked != store->auth()->revision()) return ErrAuthOldRevision();
  return absl::OkStatus();
}

}  // namespace capstan::store
