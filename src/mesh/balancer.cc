#include "mesh/balancer.h"

#include <xxhash.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace capstan::mesh {

uint64_t HashKey(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

namespace {

// Each endpoint in turn.
class RoundRobin final : public Balancer {
 public:
  void Update(const std::vector<EndpointState*>& endpoints) override { endpoints_ = endpoints; }
  EndpointState* Pick(const PickContext& ctx) override {
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      EndpointState* e = endpoints_[next_++ % endpoints_.size()];
      if (!ctx.Excluded(e)) return e;
    }
    return nullptr;
  }
  std::string_view name() const override { return "round_robin"; }

 private:
  std::vector<EndpointState*> endpoints_;
  size_t next_ = 0;
};

// Smooth weighted round robin (nginx's): picks are spread evenly in time,
// not in bursts per endpoint.
class WeightedRoundRobin final : public Balancer {
 public:
  void Update(const std::vector<EndpointState*>& endpoints) override {
    std::vector<Entry> next;
    for (EndpointState* e : endpoints) {
      int64_t current = 0;
      for (const Entry& old : entries_) {
        if (old.state == e) current = old.current;
      }
      next.push_back({e, current});
    }
    entries_ = std::move(next);
  }
  EndpointState* Pick(const PickContext& ctx) override {
    Entry* best = nullptr;
    int64_t total = 0;
    for (Entry& entry : entries_) {
      if (ctx.Excluded(entry.state)) continue;
      int64_t w = std::max<uint32_t>(1, entry.state->endpoint.weight);
      entry.current += w;
      total += w;
      if (best == nullptr || entry.current > best->current) best = &entry;
    }
    if (best == nullptr) return nullptr;
    best->current -= total;
    return best->state;
  }
  std::string_view name() const override { return "weighted_round_robin"; }

 private:
  struct Entry {
    EndpointState* state;
    int64_t current;
  };
  std::vector<Entry> entries_;
};

// Weighted random.
class Random final : public Balancer {
 public:
  void Update(const std::vector<EndpointState*>& endpoints) override { endpoints_ = endpoints; }
  EndpointState* Pick(const PickContext& ctx) override {
    int64_t total = 0;
    for (EndpointState* e : endpoints_) {
      if (!ctx.Excluded(e)) total += std::max<uint32_t>(1, e->endpoint.weight);
    }
    if (total == 0) return nullptr;
    int64_t x = std::uniform_int_distribution<int64_t>(0, total - 1)(rng_);
    for (EndpointState* e : endpoints_) {
      if (ctx.Excluded(e)) continue;
      x -= std::max<uint32_t>(1, e->endpoint.weight);
      if (x < 0) return e;
    }
    return nullptr;
  }
  std::string_view name() const override { return "random"; }

 private:
  std::vector<EndpointState*> endpoints_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// Power of two choices: of two random endpoints, the one with the lower
// (outstanding + 1) x EWMA latency. Adapts to slow or overloaded endpoints
// without a global view, and never herds onto one endpoint.
class PowerOfTwo final : public Balancer {
 public:
  void Update(const std::vector<EndpointState*>& endpoints) override { endpoints_ = endpoints; }
  EndpointState* Pick(const PickContext& ctx) override {
    candidates_.clear();
    for (EndpointState* e : endpoints_) {
      if (!ctx.Excluded(e)) candidates_.push_back(e);
    }
    if (candidates_.empty()) return nullptr;
    if (candidates_.size() == 1) return candidates_[0];
    std::uniform_int_distribution<size_t> pick(0, candidates_.size() - 1);
    size_t a = pick(rng_);
    size_t b = pick(rng_);
    while (b == a) b = pick(rng_);
    return Score(candidates_[a]) <= Score(candidates_[b]) ? candidates_[a] : candidates_[b];
  }
  std::string_view name() const override { return "p2c"; }

 private:
  static double Score(const EndpointState* e) {
    // An endpoint with no latency yet is treated as fast, so it gets tried.
    double latency = e->ewma_latency_ns > 0 ? e->ewma_latency_ns : 1;
    return (e->outstanding + 1) * latency / std::max<uint32_t>(1, e->endpoint.weight);
  }
  std::vector<EndpointState*> endpoints_;
  std::vector<EndpointState*> candidates_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
// a prime size filled from each endpoint's permutation; an endpoint joining
// or leaving moves only about its share of keys. Weight gives an endpoint
// more turns while the table fills.
class Maglev final : public Balancer {
 public:
  static constexpr size_t kTableSize = 65537;

  void Update(const std::vector<EndpointState*>& endpoints) override {
    endpoints_ = endpoints;
    table_.assign(kTableSize, -1);
    if (endpoints_.empty()) return;
    size_t n = endpoints_.size();
    std::vector<uint64_t> offset(n), skip(n), next(n, 0);
    for (size_t i = 0; i < n; ++i) {
      const std::string& id = endpoints_[i]->endpoint.id;
      offset[i] = XXH3_64bits_withSeed(id.data(), id.size(), 0x6d61676c) % kTableSize;
      skip[i] = XXH3_64bits_withSeed(id.data(), id.size(), 0x65760001) % (kTableSize - 1) + 1;
    }
    size_t filled = 0;
    while (true) {
      for (size_t i = 0; i < n; ++i) {
        for (uint32_t turn = 0; turn < std::max<uint32_t>(1, endpoints_[i]->endpoint.weight);
             ++turn) {
          size_t slot = (offset[i] + next[i] * skip[i]) % kTableSize;
          while (table_[slot] >= 0) {
            ++next[i];
            slot = (offset[i] + next[i] * skip[i]) % kTableSize;
          }
          table_[slot] = static_cast<int>(i);
          ++next[i];
          if (++filled == kTableSize) return;
        }
      }
    }
  }
  EndpointState* Pick(const PickContext& ctx) override {
    if (endpoints_.empty()) return nullptr;
    // An excluded endpoint's keys go to the next slots' owners: the same
    // key still lands on the same fallback.
    size_t slot = ctx.hash % kTableSize;
    for (size_t i = 0; i < kTableSize; ++i) {
      EndpointState* e = endpoints_[static_cast<size_t>(table_[(slot + i) % kTableSize])];
      if (!ctx.Excluded(e)) return e;
    }
    return nullptr;
  }
  std::string_view name() const override { return "maglev"; }

 private:
  std::vector<EndpointState*> endpoints_;
  std::vector<int> table_;
};

struct Registry {
  std::mutex mu;
  std::map<std::string, BalancerFactory> factories;
};

Registry& GetRegistry() {
  static Registry* registry = [] {
    auto* r = new Registry();
    r->factories["round_robin"] = [] { return std::make_unique<RoundRobin>(); };
    r->factories["weighted_round_robin"] = [] { return std::make_unique<WeightedRoundRobin>(); };
    r->factories["random"] = [] { return std::make_unique<Random>(); };
    r->factories["p2c"] = [] { return std::make_unique<PowerOfTwo>(); };
    r->factories["maglev"] = [] { return std::make_unique<Maglev>(); };
    return r;
  }();
  return *registry;
}

}  // namespace

void RegisterBalancer(const std::string& name, BalancerFactory factory) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> BalancerNames() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

absl::StatusOr<std::unique_ptr<Balancer>> NewBalancer(const std::string& name) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.factories.find(name);
  if (it == r.factories.end()) {
    std::vector<std::string> names;
    for (const auto& [n, f] : r.factories) names.push_back(n);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown load balancer '", name, "'; known: ", absl::StrJoin(names, ", ")));
  }
  return it->second();
}

}  // namespace capstan::mesh
