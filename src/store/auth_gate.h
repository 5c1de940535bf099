// The one check point of the etcd API: every native handler is registered
// into a MethodTable, and the table installs each one on the server behind
// the gate. While auth is enabled the gate, before a handler runs (before
// each message, for streams):
//
//   1. resolves who calls: the `token` metadata (etcd's simple token), else
//      the verified client certificate's Common Name (PeerNameSource, set
//      by the TLS layer), else nobody;
//   2. runs the method's policy (auth_policy.cc) on the parsed request:
//      which keys it reads and writes, or that it needs an identity or the
//      root role; a method without a policy is refused (fail closed);
//   3. runs the handler with the identity in CallAuthScope, so a proposal
//      carries it (LogEntry.auth_header) and the applier re-checks what
//      depends on apply-time state (a lease's keys, the auth revision).
//
// While auth is disabled the gate costs one atomic load per call.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net/grpc_server.h"
#include "store/auth_store.h"

namespace capstan::store {

class Store;

// The verified client certificate's Common Name of a call, if the client
// presented one (etcd: the CN is the user when there is no token).
using PeerNameSource = std::function<std::optional<std::string>(const net::GrpcCall&)>;

// A method's permission check, given who calls and the request message
// (parsed again here; only while auth is enabled). OK lets the call in.
using AuthPolicy = std::function<absl::Status(Store*, const AuthInfo&, net::Buffer& request)>;

class AuthGate {
 public:
  explicit AuthGate(Store* store);

  // REQUIRES: before the server listens.
  void set_peer_name_source(PeerNameSource source) { peer_name_ = std::move(source); }

  // Who `call` is from (see above). ErrInvalidAuthToken for an unknown or
  // expired token.
  absl::StatusOr<AuthInfo> Identify(const net::GrpcCall& call) const;

  // The policy of `path`, or null (no policy: refused while auth is on).
  const AuthPolicy* PolicyFor(std::string_view path) const;

  // Methods anyone may call (Authenticate, AuthStatus): no identity is
  // resolved, so a stale token does not stand in the way of a new one.
  static bool IsOpen(std::string_view path);

  Store* store() const { return store_; }

 private:
  Store* store_;
  PeerNameSource peer_name_;
  std::map<std::string, AuthPolicy, std::less<>> policies_;
};

// The etcd API's handlers, collected so that they are installed together,
// each behind the gate (no handler reaches the server any other way).
class MethodTable {
 public:
  void AddUnary(std::string path, net::GrpcUnaryHandler handler) {
    unary_[std::move(path)] = std::move(handler);
  }
  void AddStream(std::string path, net::GrpcStreamFactory factory) {
    streams_[std::move(path)] = std::move(factory);
  }
  // Every path added, for tests.
  std::vector<std::string> paths() const;
  void InstallGated(std::shared_ptr<const AuthGate> gate, net::GrpcServer* server);

 private:
  std::map<std::string, net::GrpcUnaryHandler> unary_;
  std::map<std::string, net::GrpcStreamFactory> streams_;
};

// Who a call is from, given what it carries: its token (wins; an unknown
// or expired one is ErrInvalidAuthToken), whether it came through etcd's
// gRPC gateway (whose certificate is not the user's), and its verified
// client certificate's Common Name. Nobody (an empty user) otherwise.
absl::StatusOr<AuthInfo> ResolveIdentity(AuthStore* auth, std::optional<std::string_view> token,
                                         bool via_gateway,
                                         const std::optional<std::string>& common_name);

// The policies, by method path (auth_policy.cc).
std::map<std::string, AuthPolicy, std::less<>> MakeAuthPolicies();

// For reads that run after a wait (linearizable ranges, read-only txns):
// the auth revision the current call was checked at (0: not checked), and
// the check, after the wait, that the call's check still holds: the
// revision did not move and auth was not enabled meanwhile (etcd checks
// after its read index, in doSerialize; the gate checks before).
uint64_t CheckedAuthRevision();
absl::Status RecheckAuthRevision(Store* store, uint64_t checked);

}  // namespace capstan::store
