// The auth store: etcd's users, roles and key-range permissions, replicated
// through the log (changes are LogEntry.auth, applied by Applier on every
// member) and kept in the backend beside the member records:
//
//   'm' "auth/enabled"        -> "1" or "0"
//   'm' "auth/revision"       -> 8 bytes big-endian
//   'm' "auth/user/" name     -> authpb.User (password: bcrypt hash)
//   'm' "auth/role/" name     -> authpb.Role
//
// The auth revision counts changes (etcd's): a request checked against an
// older revision is refused at apply (ErrAuthOldRevision), so a permission
// change takes effect for every request applied after it. Each change
// rebuilds the per-user permission cache (merged READ and WRITE intervals).
//
// Simple tokens ("<16 letters>.<log index>", etcd's format) are assigned at
// apply on every member, live `token_ttl` after their last use, and die
// with their user's deletion or password change and with auth disable.
// With `--auth-token jwt,...` (Options::jwt, jwt.h) tokens are instead
// signed by the member that answers Authenticate and checked by signature
// on any member: nothing about them is kept here, and they die with the
// auth revision they name (any auth change) or their "exp".
//
// Passwords: bcrypt ("$2b$", cost 10 as etcd) through libcrypt's crypt_rn,
// so hashes are interchangeable with etcd's Go bcrypt. Hashing and checking
// take ~50 ms at cost 10: callers run them on a worker pool.
//
// Thread-safety: Apply*/Load from the applier thread; everything else from
// any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "base/status.h"
#include "capstan/store/internal.pb.h"
#include "etcd/authpb/auth.pb.h"
#include "etcd/etcdserverpb/rpc.pb.h"
#include "rocksdb/write_batch.h"

namespace capstan::store {

class Backend;
class JwtTokenProvider;  // jwt.h

// ---- etcd's auth errors (gRPC codes and exact messages: clients match them)
inline absl::Status ErrRootUserNotExist() {
  return absl::FailedPreconditionError("etcdserver: root user does not exist");
}
inline absl::Status ErrRootRoleNotExist() {
  return absl::FailedPreconditionError("etcdserver: root user does not have root role");
}
inline absl::Status ErrUserAlreadyExist() {
  return absl::FailedPreconditionError("etcdserver: user name already exists");
}
inline absl::Status ErrUserEmpty() {
  return absl::InvalidArgumentError("etcdserver: user name is empty");
}
inline absl::Status ErrUserNotFound() {
  return absl::FailedPreconditionError("etcdserver: user name not found");
}
inline absl::Status ErrRoleAlreadyExist() {
  return absl::FailedPreconditionError("etcdserver: role name already exists");
}
inline absl::Status ErrRoleNotFound() {
  return absl::FailedPreconditionError("etcdserver: role name not found");
}
inline absl::Status ErrRoleEmpty() {
  return absl::InvalidArgumentError("etcdserver: role name is empty");
}
inline absl::Status ErrAuthFailed() {
  return absl::InvalidArgumentError(
      "etcdserver: authentication failed, invalid user ID or password");
}
inline absl::Status ErrPermissionNotGiven() {
  return absl::InvalidArgumentError("etcdserver: permission not given");
}
inline absl::Status ErrPermissionDenied() {
  return absl::PermissionDeniedError("etcdserver: permission denied");
}
inline absl::Status ErrRoleNotGranted() {
  return absl::FailedPreconditionError("etcdserver: role is not granted to the user");
}
inline absl::Status ErrPermissionNotGranted() {
  return absl::FailedPreconditionError("etcdserver: permission is not granted to the role");
}
inline absl::Status ErrAuthNotEnabled() {
  return absl::FailedPreconditionError("etcdserver: authentication is not enabled");
}
inline absl::Status ErrInvalidAuthToken() {
  return absl::UnauthenticatedError("etcdserver: invalid auth token");
}
inline absl::Status ErrInvalidAuthMgmt() {
  return absl::InvalidArgumentError("etcdserver: invalid auth management");
}
inline absl::Status ErrAuthOldRevision() {
  return absl::InvalidArgumentError("etcdserver: revision of auth store is old");
}
// etcd has no gRPC mapping for this one: it reaches clients as UNKNOWN.
inline absl::Status ErrNoPasswordUser() {
  return absl::UnknownError("auth: authentication failed, password was given for no password user");
}

inline constexpr char kRootUser[] = "root";
inline constexpr char kRootRole[] = "root";

// Who a request is from: a user and the auth revision its identity was
// resolved at (etcd's AuthInfo). An empty user means "no credentials".
struct AuthInfo {
  std::string user;
  uint64_t revision = 0;
};

// The identity of the call whose handler runs on this thread right now,
// set by the gate (auth_gate.h) around a handler while auth is enabled:
// Store::Propose stamps it into the proposal's AuthHeader, and reads
// compare its revision after they ran (etcd's doSerialize).
class CallAuthScope {
 public:
  explicit CallAuthScope(const AuthInfo* info) : saved_(current_) { current_ = info; }
  ~CallAuthScope() { current_ = saved_; }
  CallAuthScope(const CallAuthScope&) = delete;
  CallAuthScope& operator=(const CallAuthScope&) = delete;
  // Null outside a gated handler or while auth is disabled.
  static const AuthInfo* Current() { return current_; }

 private:
  const AuthInfo* saved_;
  static thread_local const AuthInfo* current_;
};

// A union of key intervals [begin, end), end "" meaning "to the end of the
// key space", kept sorted and merged so that a range is permitted only when
// the union covers all of it (etcd's range_perm_cache).
class KeyIntervalSet {
 public:
  // A permission's key and range_end: "" is the single key, "\0" from key.
  void Add(std::string_view key, std::string_view range_end);
  // After the last Add.
  void Merge();
  // A request's key and range_end, with the same conventions.
  bool Covers(std::string_view key, std::string_view range_end) const;
  bool empty() const { return intervals_.empty(); }

 private:
  struct Interval {
    std::string begin, end;  // end "" = unbounded
  };
  std::vector<Interval> intervals_;
};

class AuthStore {
 public:
  struct Options {
    std::chrono::seconds token_ttl{300};  // --auth-token-ttl
    int bcrypt_cost = 10;                 // --bcrypt-cost
    // --auth-token jwt,...: JWT tokens; null: simple tokens.
    std::shared_ptr<const JwtTokenProvider> jwt;
  };
  AuthStore(Backend* backend, Options options);

  // (Re)loads everything from the backend (start, snapshot restore); drops tokens.
  absl::Status Load();

  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  uint64_t revision() const;

  // ---- applier thread
  // Applies `req` at log `index`, adding its writes to `batch`; the caller
  // commits the batch. `header` (may be null: internal) is who asked; admin
  // requests are re-checked against it, as etcd does at apply.
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Apply(const AuthRequest& req,
                                                                   uint64_t index,
                                                                   const AuthHeader* header,
                                                                   rocksdb::WriteBatch* batch);

  // ---- reads (answered from this member's state)
  absl::Status Status(etcdserverpb::AuthStatusResponse* resp) const;
  absl::Status UserGet(const etcdserverpb::AuthUserGetRequest& req,
                       etcdserverpb::AuthUserGetResponse* resp) const;
  absl::Status UserList(etcdserverpb::AuthUserListResponse* resp) const;
  absl::Status RoleGet(const etcdserverpb::AuthRoleGetRequest& req,
                       etcdserverpb::AuthRoleGetResponse* resp) const;
  absl::Status RoleList(etcdserverpb::AuthRoleListResponse* resp) const;

  // ---- checks (all OK while auth is disabled)
  // READ on [key, range_end) (etcd's conventions for range_end).
  absl::Status CheckRead(const AuthInfo& who, std::string_view key,
                         std::string_view range_end) const;
  absl::Status CheckWrite(const AuthInfo& who, std::string_view key,
                          std::string_view range_end) const;
  // The user has the root role (etcd's IsAdminPermitted).
  absl::Status CheckAdmin(const AuthInfo& who) const;
  bool IsAdmin(std::string_view user) const;
  bool HasRole(std::string_view user, std::string_view role) const;
  // The request carries an identity (etcd's requireAuthInfo).
  absl::Status CheckIdentified(const AuthInfo& who) const;

  // ---- authentication
  // Resolves a simple token and extends its life, or checks a JWT (its
  // revision is the claim's: CheckRead/CheckWrite refuse it with
  // ErrAuthOldRevision after an auth change); ErrInvalidAuthToken else.
  absl::StatusOr<AuthInfo> InfoFromToken(std::string_view token);
  // JWT: a token this member cannot resolve now never will be (no log
  // entry makes it valid), so waiting for a read index is useless.
  bool tokens_self_contained() const { return options_.jwt != nullptr; }
  const JwtTokenProvider* jwt() const { return options_.jwt.get(); }
  // An identity without a token (a client certificate's Common Name).
  AuthInfo InfoFromName(std::string_view user) const;
  // Checks `password` (bcrypt: slow, call it off the event loops). Returns
  // the auth revision it was checked at.
  absl::StatusOr<uint64_t> CheckPassword(std::string_view user, std::string_view password) const;
  // bcrypt hash of `password` at `cost` (slow).
  static absl::StatusOr<std::string> HashPassword(std::string_view password, int cost);
  // 16 random letters (etcd's simple token prefix).
  static std::string NewTokenPrefix();
  const Options& options() const { return options_; }

  // For tests: tokens alive now.
  size_t token_count() const;

 private:
  struct UserPerms {
    KeyIntervalSet read, write;
    bool admin = false;
  };
  struct Token {
    std::string user;
    std::chrono::steady_clock::time_point expires;
  };

  absl::Status CheckOp(const AuthInfo& who, std::string_view key, std::string_view range_end,
                       bool write) const;
  void PutUser(const authpb::User& u, rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PutRole(const authpb::Role& r, rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumps the revision and rebuilds the permission cache.
  void CommitRevision(rocksdb::WriteBatch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RebuildPerms() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InvalidateUserTokens(std::string_view user);
  void ClearTokens();
  void PurgeExpiredTokens() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tokens_mu_);

  Backend* backend_;
  Options options_;
  std::atomic<bool> enabled_{false};
  mutable Mutex mu_;
  uint64_t revision_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, authpb::User, std::less<>> users_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, authpb::Role, std::less<>> roles_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, UserPerms> perms_ ABSL_GUARDED_BY(mu_);
  // Tokens are touched on every call (their life extends), hence their own lock.
  mutable Mutex tokens_mu_;
  absl::flat_hash_map<std::string, Token> tokens_ ABSL_GUARDED_BY(tokens_mu_);
  size_t tokens_at_last_purge_ ABSL_GUARDED_BY(tokens_mu_) = 0;
};

}  // namespace capstan::store
