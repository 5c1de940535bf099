// etcd's Auth service, native: changes are proposals (LogEntry.auth)
// applied by every member's AuthStore; reads answer from this member's
// auth store after a read index (linearizable, like etcd's, whose reads of
// the auth store go through the log). bcrypt (hashing a new password,
// checking one) and JWT signing run on the member's worker pool, never on a
// loop.
#include "etcd/etcdserverpb/rpc.pb.h"
#include "store/auth_gate.h"
#include "store/jwt.h"
#include "store/native_call.h"
#include "store/store.h"

namespace capstan::store {
namespace {

using namespace etcdserverpb;
using net::Buffer;
using net::GrpcCallPtr;

// co_await ReadIndex{store, loop}: resumes on `loop` once this member has
// applied everything committed before (Store::LinearizableRead).
struct ReadIndex {
  ReadIndex(Store* s, net::EventLoop* l)
      : store(s), loop(l), st(std::make_shared<absl::Status>()) {}
  Store* store;
  net::EventLoop* loop;
  std::shared_ptr<absl::Status> st;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    store->LinearizableRead([st = st, loop = loop, h](absl::Status s) {
      *st = std::move(s);
      loop->Post([h] { h.resume(); });
    });
  }
  absl::Status await_resume() { return *st; }
};

// co_await Proposal{store, loop, entry}: the applied result, on `loop`.
struct Proposal {
  struct Result {
    absl::Status status;
    std::unique_ptr<google::protobuf::Message> resp;
  };
  Proposal(Store* s, net::EventLoop* l, LogEntry e)
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
          if (st.ok() && msg != nullptr) {
            result->resp.reset(msg->New());
            result->resp->CopyFrom(*msg);
          }
          loop->Post([h] { h.resume(); });
        },
        loop);
  }
  void await_resume() const noexcept {}
};

// The caller's identity goes with an auth change, so that the applier
// checks the root role again where the change takes effect.
void StampCaller(const AuthInfo* who, LogEntry* entry) {
  if (who == nullptr) return;
  entry->mutable_auth_header()->set_username(who->user);
  entry->mutable_auth_header()->set_revision(who->revision);
}

// Proposes an auth change and answers with its response type.
template <typename Resp>
net::Task<void> ProposeAuth(Store* store, GrpcCallPtr call, LogEntry entry) {
  Proposal proposal(store, call->loop(), std::move(entry));
  co_await proposal;
  if (!proposal.result->status.ok()) co_return call->Finish(proposal.result->status);
  auto* resp = static_cast<Resp*>(proposal.result->resp.get());
  if (resp == nullptr) co_return call->Finish(absl::InternalError("no apply result"));
  store->FillHeader(resp->mutable_header());
  Reply(call, *resp);
}

// UserAdd and UserChangePassword: the hash is made on the pool and only
// the hash enters the log.
template <typename Resp>
net::Task<void> ProposeWithHash(Store* store, net::WorkerPool* pool, GrpcCallPtr call,
                                LogEntry entry, bool hash) {
  AuthRequest* a = entry.mutable_auth();
  std::string password =
      a->has_user_add() ? a->user_add().password() : a->user_change_password().password();
  std::string hashed;
  if (hash) {
    int cost = store->auth()->options().bcrypt_cost;
    // Named, capturing by reference: GCC 12 miscompiles a temporary that
    // owns memory (a lambda holding a string) inside a co_await expression.
    auto hashing = pool->Run(call->loop(),
                             [&password, cost] { return AuthStore::HashPassword(password, cost); });
    absl::StatusOr<std::string> made = co_await hashing;
    if (!made.ok()) co_return call->Finish(made.status());
    hashed = *std::move(made);
  }
  if (a->has_user_add()) {
    a->mutable_user_add()->clear_password();
    a->mutable_user_add()->set_hashedpassword(hashed);
  } else {
    a->mutable_user_change_password()->clear_password();
    a->mutable_user_change_password()->set_hashedpassword(hashed);
  }
  net::Task<void> proposing = ProposeAuth<Resp>(store, call, std::move(entry));
  co_await proposing;
}

net::Task<void> Authenticate(Store* store, net::WorkerPool* pool, GrpcCallPtr call,
                             AuthenticateRequest req) {
  // As etcd: the password is checked at a revision, the token assigned at
  // apply only if the revision is still that one (else check again).
  for (int attempt = 0;; ++attempt) {
    ReadIndex read(store, call->loop());
    absl::Status st = co_await read;
    if (!st.ok()) co_return call->Finish(st);
    AuthStore* auth = store->auth();
    auto checking = pool->Run(
        call->loop(), [auth, &req] { return auth->CheckPassword(req.name(), req.password()); });
    absl::StatusOr<uint64_t> checked = co_await checking;
    if (!checked.ok()) co_return call->Finish(checked.status());
    const JwtTokenProvider* jwt = auth->jwt();
    // etcd fails the same way, after the password check (at apply).
    if (jwt != nullptr && jwt->verify_only()) co_return call->Finish(ErrVerifyOnly());
    LogEntry entry;
    InternalAuthenticate* a = entry.mutable_auth()->mutable_authenticate();
    a->set_name(req.name());
    a->set_token_prefix(AuthStore::NewTokenPrefix());
    a->set_checked_revision(*checked);
    Proposal proposal(store, call->loop(), std::move(entry));
    co_await proposal;
    st = proposal.result->status;
    if (absl::IsInvalidArgument(st) && st == ErrAuthOldRevision() && attempt < 3) continue;
    if (!st.ok()) co_return call->Finish(st);
    auto* resp = static_cast<AuthenticateResponse*>(proposal.result->resp.get());
    if (jwt != nullptr) {
      // Applied: the revision is still the checked one. Signing (RSA: about
      // a millisecond) runs on the pool, like bcrypt.
      uint64_t revision = *checked;
      auto signing = pool->Run(call->loop(),
                               [jwt, &req, revision] { return jwt->Sign(req.name(), revision); });
      absl::StatusOr<std::string> token = co_await signing;
      if (!token.ok()) co_return call->Finish(token.status());
      resp->set_token(*std::move(token));
    }
    store->FillHeader(resp->mutable_header());
    co_return Reply(call, *resp);
  }
}

// A read of the auth store after a read index.
template <typename Resp, typename Fn>
net::Task<void> ReadAuth(Store* store, GrpcCallPtr call, uint64_t checked, Fn fn) {
  ReadIndex read(store, call->loop());
  absl::Status st = co_await read;
  Resp resp;
  if (st.ok()) st = fn(store->auth(), &resp);
  if (st.ok()) st = RecheckAuthRevision(store, checked);
  if (!st.ok()) co_return call->Finish(st);
  store->FillHeader(resp.mutable_header());
  Reply(call, resp);
}

}  // namespace

void AddNativeAuth(Store* store, MethodTable* methods, net::WorkerPool* pool) {
  const std::string svc = "/etcdserverpb.Auth/";
  // A change: parse into the log entry's slot, stamp the caller, propose.
  auto change = [&](const char* name, auto slot, auto resp_tag) {
    using Resp = decltype(resp_tag);
    methods->AddUnary(svc + name, [store, slot](const GrpcCallPtr& call, Buffer bytes) {
      LogEntry entry;
      if (!ParseRequest(call, bytes, slot(entry.mutable_auth()))) return;
      StampCaller(CallAuthScope::Current(), &entry);
      call->loop()->StartOwned(ProposeAuth<Resp>(store, call, std::move(entry)));
    });
  };
  change(
      "AuthEnable", [](AuthRequest* a) { return a->mutable_enable(); }, AuthEnableResponse());
  change(
      "AuthDisable", [](AuthRequest* a) { return a->mutable_disable(); }, AuthDisableResponse());
  change(
      "UserDelete", [](AuthRequest* a) { return a->mutable_user_delete(); },
      AuthUserDeleteResponse());
  change(
      "UserGrantRole", [](AuthRequest* a) { return a->mutable_user_grant_role(); },
      AuthUserGrantRoleResponse());
  change(
      "UserRevokeRole", [](AuthRequest* a) { return a->mutable_user_revoke_role(); },
      AuthUserRevokeRoleResponse());
  change(
      "RoleAdd", [](AuthRequest* a) { return a->mutable_role_add(); }, AuthRoleAddResponse());
  change(
      "RoleDelete", [](AuthRequest* a) { return a->mutable_role_delete(); },
      AuthRoleDeleteResponse());
  change(
      "RoleGrantPermission", [](AuthRequest* a) { return a->mutable_role_grant_permission(); },
      AuthRoleGrantPermissionResponse());
  change(
      "RoleRevokePermission", [](AuthRequest* a) { return a->mutable_role_revoke_permission(); },
      AuthRoleRevokePermissionResponse());

  methods->AddUnary(svc + "UserAdd", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
    LogEntry entry;
    AuthUserAddRequest* req = entry.mutable_auth()->mutable_user_add();
    if (!ParseRequest(call, bytes, req)) return;
    // etcd refuses an empty name before hashing anything.
    if (req->name().empty()) return call->Finish(ErrUserEmpty());
    StampCaller(CallAuthScope::Current(), &entry);
    bool hash = !req->options().no_password();
    call->loop()->StartOwned(
        ProposeWithHash<AuthUserAddResponse>(store, pool, call, std::move(entry), hash));
  });
  methods->AddUnary(
      svc + "UserChangePassword", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
        LogEntry entry;
        AuthUserChangePasswordRequest* req = entry.mutable_auth()->mutable_user_change_password();
        if (!ParseRequest(call, bytes, req)) return;
        StampCaller(CallAuthScope::Current(), &entry);
        call->loop()->StartOwned(ProposeWithHash<AuthUserChangePasswordResponse>(
            store, pool, call, std::move(entry), true));
      });
  methods->AddUnary(svc + "Authenticate", [store, pool](const GrpcCallPtr& call, Buffer bytes) {
    AuthenticateRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(Authenticate(store, pool, call, std::move(req)));
  });
  methods->AddUnary(svc + "AuthStatus", [store](const GrpcCallPtr& call, Buffer bytes) {
    AuthStatusRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    AuthStatusResponse resp;
    (void)store->auth()->Status(&resp);
    store->FillHeader(resp.mutable_header());
    Reply(call, resp);
  });
  methods->AddUnary(svc + "UserGet", [store](const GrpcCallPtr& call, Buffer bytes) {
    AuthUserGetRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(ReadAuth<AuthUserGetResponse>(
        store, call, CheckedAuthRevision(),
        [req](AuthStore* a, AuthUserGetResponse* r) { return a->UserGet(req, r); }));
  });
  methods->AddUnary(svc + "UserList", [store](const GrpcCallPtr& call, Buffer bytes) {
    AuthUserListRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(ReadAuth<AuthUserListResponse>(
        store, call, CheckedAuthRevision(),
        [](AuthStore* a, AuthUserListResponse* r) { return a->UserList(r); }));
  });
  methods->AddUnary(svc + "RoleGet", [store](const GrpcCallPtr& call, Buffer bytes) {
    AuthRoleGetRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(ReadAuth<AuthRoleGetResponse>(
        store, call, CheckedAuthRevision(),
        [req](AuthStore* a, AuthRoleGetResponse* r) { return a->RoleGet(req, r); }));
  });
  methods->AddUnary(svc + "RoleList", [store](const GrpcCallPtr& call, Buffer bytes) {
    AuthRoleListRequest req;
    if (!ParseRequest(call, bytes, &req)) return;
    call->loop()->StartOwned(ReadAuth<AuthRoleListResponse>(
        store, call, CheckedAuthRevision(),
        [](AuthStore* a, AuthRoleListResponse* r) { return a->RoleList(r); }));
  });
}

}  // namespace capstan::store
