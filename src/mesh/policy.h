// Per-service policies pushed from the store: the proxyless mesh. A
// service's governance (balancer, timeouts, retries, hedging, retry budget,
// circuit breaker, outlier ejection) is a JSON document in the store under
//
//   /capstan/mesh/policies/<service>
//
// and every client of that service — rpc::BalancedChannel, a gateway cluster
// — follows it, and its changes, without a restart. The layout and every
// field with its default: src/mesh/README.md ("Policies from the store").
//
//   auto watcher = mesh::PolicyWatcher::Start(store_client);
//   auto sub = watcher->Subscribe("echo", loop, [&](const std::optional<mesh::EndpointPoolOptions>&
//   p) {
//     pool->SetOptions(p ? *p : own_options);   // on `loop`
//   });
//   // or: balanced_channel->FollowPolicy(*watcher, "echo");
//
// A document that does not parse or validate is refused with an error log
// naming its key, and the service keeps its last good policy. Deleting the
// document sends the clients back to their own options (nullopt).
//
// Thread-safety: Subscribe from any thread; a subscription is destroyed on
// its loop, before the watcher. ParsePolicy is a pure function.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "mesh/endpoint_pool.h"
#include "net/event_loop.h"

namespace capstan::client {
class Client;
class PrefixWatcher;
struct PrefixChange;
}  // namespace capstan::client

namespace capstan::mesh {

// Where policies live: <prefix><service>.
inline constexpr char kPolicyPrefix[] = "/capstan/mesh/policies/";

// A policy document into pool options. Every field may be left out (it
// takes the EndpointPoolOptions default); an unknown field, a value of the
// wrong type or out of range, or a balancer that is not registered is
// INVALID_ARGUMENT naming the field. wait_for_endpoints is the client's own
// and not part of a policy.
absl::StatusOr<EndpointPoolOptions> ParsePolicy(std::string_view json);

struct PolicyWatcherOptions {
  std::string prefix = kPolicyPrefix;
  // Between attempts when the store cannot be reached or the watch breaks
  // (the last good policies stay in force meanwhile).
  std::chrono::milliseconds retry{500};
};

class PolicyWatcher {
 public:
  // nullopt: the service has no policy (now); its clients use their own
  // options.
  using PolicyCallback = std::function<void(const std::optional<EndpointPoolOptions>&)>;

  // Follows the prefix with a client::PrefixWatcher (lists it, watches from
  // the listed revision + 1, lists again after `retry` when the watch breaks;
  // policies deleted meanwhile are removed then).
  static std::unique_ptr<PolicyWatcher> Start(std::shared_ptr<client::Client> client,
                                              PolicyWatcherOptions options = {});
  // Stops the prefix watcher (waits for a listing in progress, bounded by
  // the client's timeout). REQUIRES: every subscription destroyed.
  ~PolicyWatcher();
  PolicyWatcher(const PolicyWatcher&) = delete;
  PolicyWatcher& operator=(const PolicyWatcher&) = delete;

  class Subscription {
   public:
    virtual ~Subscription() = default;
  };
  // `on_policy` runs on `loop` (by Post): with the service's current policy
  // at once when it has one, then with every accepted change or deletion.
  std::unique_ptr<Subscription> Subscribe(std::string service, net::EventLoop* loop,
                                          PolicyCallback on_policy);

  // The service's policy in force (for /status and tests).
  std::optional<EndpointPoolOptions> Current(std::string_view service) const;
  // Documents accepted and refused since the start.
  uint64_t accepted() const;
  uint64_t refused() const;

 private:
  struct Subscriber;
  struct Policy {
    std::string document;
    EndpointPoolOptions options;
  };
  class SubscriptionImpl;
  explicit PolicyWatcher(std::string prefix);
  // A batch from the prefix watcher (its listings and events, in order).
  void OnChange(const std::vector<client::PrefixChange>& batch);
  // `document` null: the key was deleted.
  void Apply(const std::string& key, const std::string* document)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const std::string& service) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unsubscribe(const std::string& service, const std::shared_ptr<Subscriber>& subscriber);

  const std::string prefix_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Policy> policies_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<Subscriber>>> subscribers_
      ABSL_GUARDED_BY(mu_);
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  // Last: stopped first, so no batch runs while the rest is destroyed.
  std::unique_ptr<client::PrefixWatcher> watcher_;
};

}  // namespace capstan::mesh
