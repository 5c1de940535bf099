// DiscoveryHub: one EndpointSource per target, shared by every loop and
// channel of a process that asks for that target. Ten loops with a
// BalancedChannel each to "store://10.0.0.1:2379/services/echo" make one
// list and one watch on the store, not ten; a gateway cluster and an rpc
// client for the same service share theirs too.
//
//   mesh::DiscoveryHub hub;                  // one per process, owned by main
//   // On loop L: sets arrive on L (by Post), the current one at once.
//   auto sub = hub.Subscribe("store://127.0.0.1:2379/services/echo", loop,
//                            [](std::vector<mesh::Endpoint> set) { ... }).value();
//   ...
//   sub.reset();                             // on L; the last one stops the source
//
//   // Or as an EndpointSource, for what takes one (rpc::BalancedChannel):
//   auto channel = rpc::BalancedChannel::Create(loop, hub.Source(target)).value();
//
// The source starts with the first subscriber and stops (its watch closed)
// when the last one leaves; a later subscriber starts it again.
//
// Thread-safety: Subscribe and Source from any thread. A subscription with
// a loop must be destroyed on that loop (its callback then never runs
// again); one without (Source's) from any thread but the source's. The hub
// must outlive its subscriptions.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "mesh/discovery.h"
#include "net/event_loop.h"

namespace capstan::mesh {

class DiscoveryHub {
 public:
  using SourceFactory =
      std::function<absl::StatusOr<std::unique_ptr<EndpointSource>>(std::string_view target)>;

  // Sources come from `factory` (NewEndpointSource when empty; tests pass
  // their own).
  explicit DiscoveryHub(SourceFactory factory = nullptr);
  // REQUIRES: every subscription destroyed.
  ~DiscoveryHub();
  DiscoveryHub(const DiscoveryHub&) = delete;
  DiscoveryHub& operator=(const DiscoveryHub&) = delete;

  // Receiving endpoint sets for one target while it lives.
  class Subscription {
   public:
    virtual ~Subscription() = default;
  };

  // `on_update` runs on `loop` (by Post) with every set of `target`: the
  // current one at once when the source has delivered one already, then
  // each change. INVALID_ARGUMENT for a target NewEndpointSource refuses.
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::string_view target,
                                                          net::EventLoop* loop,
                                                          EndpointsCallback on_update);

  // An EndpointSource over the shared one: Start subscribes (its callback
  // runs on the source's thread, as EndpointSource says), destruction
  // unsubscribes. The target is checked here.
  absl::StatusOr<std::unique_ptr<EndpointSource>> Source(std::string_view target);

  // Sources running now (one per target with subscribers).
  size_t sources() const;

 private:
  struct Entry;
  struct Subscriber;
  class SubscriptionImpl;
  class SharedSource;

  // Adds `subscriber` to the target's entry, starting its source when new.
  absl::StatusOr<std::unique_ptr<Subscription>> Add(std::string_view target,
                                                    std::shared_ptr<Subscriber> subscriber);
  void Remove(const std::string& target, const std::shared_ptr<Entry>& entry,
              const std::shared_ptr<Subscriber>& subscriber);
  static void Deliver(const std::shared_ptr<Subscriber>& subscriber,
                      std::vector<Endpoint> endpoints);

  SourceFactory factory_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace capstan::mesh
