// Load balancers: pick one endpoint of a set for each call. Shared by the RPC
// client and (later) the gateway; they know nothing of either.
//
// A Balancer sees the endpoints as EndpointState records, which carry the
// load signals some policies use (calls outstanding, EWMA latency) and the
// circuit breaker the caller consults. Policies register by name:
//
//   auto balancer = mesh::NewBalancer("p2c").value();
//   balancer->Update(states);              // whenever the set changes
//   EndpointState* e = balancer->Pick({.hash = HashKey(user_id)});
//
// Names: round_robin, weighted_round_robin, random, p2c (power of two
// choices on outstanding calls x EWMA latency), maglev (consistent hashing
// on PickContext::hash). How to add one: src/mesh/README.md.
//
// Thread-safety: a Balancer and its EndpointStates belong to one thread (the
// loop that owns the client).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "base/status.h"
#include "mesh/circuit_breaker.h"
#include "mesh/outlier.h"

namespace capstan::mesh {

struct Endpoint {
  std::string host;
  int port = 0;
  uint32_t weight = 1;
  // Stable identity across updates ("host:port" unless the source says otherwise).
  std::string id;
  bool operator==(const Endpoint& o) const {
    return host == o.host && port == o.port && weight == o.weight && id == o.id;
  }
};

// One endpoint as the client sees it: what it is and how it behaves.
struct EndpointState {
  explicit EndpointState(Endpoint e, CircuitBreakerOptions breaker_options = {})
      : endpoint(std::move(e)), breaker(breaker_options) {}
  Endpoint endpoint;
  int outstanding = 0;
  // Exponentially weighted moving average of call latency, in nanoseconds;
  // 0 until the first call finishes.
  double ewma_latency_ns = 0;
  CircuitBreaker breaker;
  OutlierStats outlier;

  // REQUIRES: called once per finished call.
  void RecordLatency(std::chrono::nanoseconds latency, double alpha = 0.3) {
    double x = static_cast<double>(latency.count());
    ewma_latency_ns = ewma_latency_ns == 0 ? x : alpha * x + (1 - alpha) * ewma_latency_ns;
  }
};

struct PickContext {
  // For consistent hashing: the request's key hashed (e.g. HashKey(user)).
  uint64_t hash = 0;
  // Endpoints not to pick (ones already tried by this call, open breakers).
  const absl::flat_hash_set<const EndpointState*>* exclude = nullptr;
  bool Excluded(const EndpointState* e) const { return exclude != nullptr && exclude->contains(e); }
};

class Balancer {
 public:
  virtual ~Balancer() = default;
  // The current endpoints (not owned; valid until the next Update).
  virtual void Update(const std::vector<EndpointState*>& endpoints) = 0;
  // One endpoint not excluded, or nullptr when every one is.
  virtual EndpointState* Pick(const PickContext& context) = 0;
  virtual std::string_view name() const = 0;
};

using BalancerFactory = std::function<std::unique_ptr<Balancer>()>;

// Registers a policy under `name` (call from a static initializer or main).
void RegisterBalancer(const std::string& name, BalancerFactory factory);
absl::StatusOr<std::unique_ptr<Balancer>> NewBalancer(const std::string& name);
std::vector<std::string> BalancerNames();

// A 64-bit hash of a request key, for PickContext::hash.
uint64_t HashKey(std::string_view key);

}  // namespace capstan::mesh
