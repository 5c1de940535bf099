// Leases: TTL-bound ownership of keys, as in etcd's lessor.
//
// Grant, Remove, Attach and DetachKey run on the applier thread as log entries
// are applied (each after its change is written to the backend), so every member agrees on which
// leases exist and which keys they own. Expiry is driven by the member that leads (here: the only
// one): Expired() names leases past their deadline, and the server proposes their revocation
// through the log. Keep-alives only move the in-memory deadline. After a restart every lease gets
// its full TTL again (etcd's behaviour when a member becomes leader), so a restart never expires a
// lease early.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/mutex.h"
#include "base/status.h"

namespace capstan::store {

inline constexpr int64_t kMaxLeaseTTL = 9'000'000'000;  // seconds, as etcd

class Lessor {
 public:
  Lessor(const Clock* clock, int64_t min_ttl_seconds);

  // Applier thread. Validates a grant: the TTL it will have, or ErrLeaseExist
  // or ErrLeaseTTLTooLarge. Changes nothing.
  absl::StatusOr<int64_t> CheckGrant(int64_t id, int64_t ttl) const;
  // Applier thread, after the grant is durable. REQUIRES: CheckGrant passed.
  void Grant(int64_t id, int64_t ttl);
  // The keys attached to a lease (sorted), or ErrLeaseNotFound.
  absl::StatusOr<std::vector<std::string>> Keys(int64_t id) const;
  // Applier thread, after the revocation is durable.
  void Remove(int64_t id);
  // Makes `id` the owner of `key` (id 0: no lease), releasing any previous owner.
  void Attach(int64_t id, const std::string& key);
  // The key was deleted: no lease owns it any more.
  void DetachKey(const std::string& key);
  bool Exists(int64_t id) const;

  // Loads a lease at startup with a fresh deadline (now + ttl).
  void Restore(int64_t id, int64_t ttl);

  // Keep-alive: NOT_FOUND for unknown or already expired leases.
  absl::StatusOr<int64_t> Renew(int64_t id);
  // This member became the leader: every lease gets its full TTL (plus
  // `extend`) from now, as etcd's lessor does on promotion, since the old
  // leader's renewals are not known here.
  void Promote(std::chrono::milliseconds extend);
  // Forgets every lease (before a snapshot is restored).
  void Clear();

  struct Info {
    int64_t ttl_remaining = 0;  // whole seconds left
    int64_t granted_ttl = 0;
    std::vector<std::string> keys;
  };
  absl::StatusOr<Info> TimeToLive(int64_t id) const;
  // Lease IDs ordered by deadline.
  std::vector<int64_t> Leases() const;
  // Leases past their deadline whose revocation has not been requested in the
  // last `retry` interval; marks them as requested.
  std::vector<int64_t> TakeExpired(std::chrono::milliseconds retry);
  size_t size() const;

 private:
  struct Lease {
    int64_t ttl = 0;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::steady_clock::time_point revoke_requested;
    std::set<std::string> keys;
  };
  const Clock* clock_;
  int64_t min_ttl_;
  mutable Mutex mu_;
  std::map<int64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t, std::less<>> owner_ ABSL_GUARDED_BY(mu_);  // key -> lease
};

}  // namespace capstan::store
