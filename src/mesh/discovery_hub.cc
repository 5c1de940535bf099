#include "mesh/discovery_hub.h"

#include <optional>
#include <utility>

#include "base/logging.h"
#include "mesh/endpoint_target.h"

namespace capstan::mesh {

// One receiver of a target's sets.
struct DiscoveryHub::Subscriber {
  // nullptr: called on the source's thread (under the entry's delivery_mu).
  net::EventLoop* loop = nullptr;
  EndpointsCallback callback;
  // Cleared when the subscription ends. For loop subscribers it is read and
  // written only on the loop; for the others under delivery_mu.
  bool active = true;
};

// A target's shared source and who receives its sets.
struct DiscoveryHub::Entry {
  std::string description;
  // Guarded by the hub's mu_.
  std::unique_ptr<EndpointSource> source;
  // Held while sets are handed out, so removing a subscriber waits for a
  // delivery in progress (none runs after Remove returns).
  std::mutex delivery_mu;
  std::vector<std::shared_ptr<Subscriber>> subscribers ABSL_GUARDED_BY(delivery_mu);
  // The last set delivered, for subscribers that come later.
  std::optional<std::vector<Endpoint>> last ABSL_GUARDED_BY(delivery_mu);
};

class DiscoveryHub::SubscriptionImpl final : public DiscoveryHub::Subscription {
 public:
  SubscriptionImpl(DiscoveryHub* hub, std::string target, std::shared_ptr<Subscriber> subscriber,
                   std::shared_ptr<Entry> entry)
      : hub_(hub),
        target_(std::move(target)),
        subscriber_(std::move(subscriber)),
        entry_(std::move(entry)) {}
  ~SubscriptionImpl() override { hub_->Remove(target_, entry_, subscriber_); }

  const std::shared_ptr<Subscriber>& subscriber() const { return subscriber_; }
  const std::shared_ptr<Entry>& entry() const { return entry_; }

 private:
  DiscoveryHub* hub_;
  std::string target_;
  std::shared_ptr<Subscriber> subscriber_;
  std::shared_ptr<Entry> entry_;
};

// The EndpointSource face of a subscription without a loop.
class DiscoveryHub::SharedSource final : public EndpointSource {
 public:
  explicit SharedSource(std::unique_ptr<Subscription> subscription)
      : subscription_(static_cast<SubscriptionImpl*>(subscription.release())) {}
  void Start(EndpointsCallback on_update) override {
    Entry& entry = *subscription_->entry();
    std::lock_guard lock(entry.delivery_mu);
    subscription_->subscriber()->callback = std::move(on_update);
    if (entry.last.has_value()) subscription_->subscriber()->callback(*entry.last);
  }
  std::string Describe() const override { return subscription_->entry()->description; }

 private:
  std::unique_ptr<SubscriptionImpl> subscription_;
};

DiscoveryHub::DiscoveryHub(SourceFactory factory) : factory_(std::move(factory)) {
  if (!factory_) factory_ = [](std::string_view target) { return NewEndpointSource(target); };
}

DiscoveryHub::~DiscoveryHub() {
  std::lock_guard lock(mu_);
  if (!entries_.empty()) {
    CAPSTAN_LOG(err, "discovery hub destroyed with subscriptions", "targets", entries_.size());
  }
}

size_t DiscoveryHub::sources() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void DiscoveryHub::Deliver(const std::shared_ptr<Subscriber>& subscriber,
                           std::vector<Endpoint> endpoints) {
  if (subscriber->loop == nullptr) {
    if (subscriber->active && subscriber->callback) subscriber->callback(std::move(endpoints));
    return;
  }
  subscriber->loop->Post([subscriber, endpoints = std::move(endpoints)]() mutable {
    if (subscriber->active) subscriber->callback(std::move(endpoints));
  });
}

absl::StatusOr<std::unique_ptr<DiscoveryHub::Subscription>> DiscoveryHub::Add(
    std::string_view target, std::shared_ptr<Subscriber> subscriber) {
  std::lock_guard lock(mu_);
  std::string key(target);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    std::shared_ptr<Entry> entry = it->second;
    {
      std::lock_guard delivery(entry->delivery_mu);
      entry->subscribers.push_back(subscriber);
      if (entry->last.has_value()) Deliver(subscriber, *entry->last);
    }
    return std::make_unique<SubscriptionImpl>(this, std::move(key), std::move(subscriber),
                                              std::move(entry));
  }
  absl::StatusOr<std::unique_ptr<EndpointSource>> source = factory_(target);
  if (!source.ok()) return source.status();
  auto entry = std::make_shared<Entry>();
  entry->description = (*source)->Describe();
  entry->source = *std::move(source);
  {
    std::lock_guard delivery(entry->delivery_mu);
    entry->subscribers.push_back(subscriber);
  }
  entries_[key] = entry;
  // The source may call back at once (a static list does): the callback
  // takes only the entry's delivery_mu, never mu_.
  std::weak_ptr<Entry> weak = entry;
  entry->source->Start([weak](std::vector<Endpoint> endpoints) {
    std::shared_ptr<Entry> entry = weak.lock();
    if (entry == nullptr) return;
    std::lock_guard delivery(entry->delivery_mu);
    for (const std::shared_ptr<Subscriber>& s : entry->subscribers) Deliver(s, endpoints);
    entry->last = std::move(endpoints);
  });
  CAPSTAN_LOG(debug, "discovery source started", "target", entry->description);
  return std::make_unique<SubscriptionImpl>(this, std::move(key), std::move(subscriber),
                                            std::move(entry));
}

void DiscoveryHub::Remove(const std::string& target, const std::shared_ptr<Entry>& entry,
                          const std::shared_ptr<Subscriber>& subscriber) {
  std::unique_ptr<EndpointSource> stopped;
  {
    std::lock_guard lock(mu_);
    bool last_one;
    {
      std::lock_guard delivery(entry->delivery_mu);
      subscriber->active = false;
      std::erase(entry->subscribers, subscriber);
      last_one = entry->subscribers.empty();
    }
    if (last_one) {
      stopped = std::move(entry->source);
      // (An entry leaves the map only when its last subscriber goes, so the
      // target still names this one.)
      entries_.erase(target);
    }
  }
  // Outside the locks: stopping waits for a callback in progress, which
  // takes the entry's delivery_mu.
  if (stopped != nullptr) {
    CAPSTAN_LOG(debug, "discovery source stopped", "target", stopped->Describe());
    stopped.reset();
  }
}

absl::StatusOr<std::unique_ptr<DiscoveryHub::Subscription>> DiscoveryHub::Subscribe(
    std::string_view target, net::EventLoop* loop, EndpointsCallback on_update) {
  auto subscriber = std::make_shared<Subscriber>();
  subscriber->loop = loop;
  subscriber->callback = std::move(on_update);
  return Add(target, std::move(subscriber));
}

absl::StatusOr<std::unique_ptr<EndpointSource>> DiscoveryHub::Source(std::string_view target) {
  // Subscribed now (so a bad target fails here) with no callback until
  // Start: sets that come before are kept as `last` and replayed by Start.
  absl::StatusOr<std::unique_ptr<Subscription>> subscription =
      Add(target, std::make_shared<Subscriber>());
  if (!subscription.ok()) return subscription.status();
  return std::make_unique<SharedSource>(*std::move(subscription));
}

}  // namespace capstan::mesh
