// The service registry in the store: instances of a service are keys under a
// prefix, each attached to its instance's lease, so an instance that dies
// leaves the set when its lease expires and one that stops cleanly leaves at
// once (it revokes the lease).
//
//   <prefix>/<id>  ->  {"Addr":"10.0.0.7:7000","Metadata":{"weight":2}}
//
// This is the layout of etcd's gRPC naming (clientv3/naming/endpoints), so
// services registered by Go's endpoints.Manager are found here and the other
// way round. A value that is just "host:port" is accepted too.
//
//   // server side: on start
//   auto reg = mesh::Registration::Start(store_client, {.prefix = "services/echo",
//                                                       .endpoint = {"10.0.0.7", 7000}});
//   ...                       // the lease is kept alive on a thread of its own
//   reg->reset();             // graceful stop: revokes the lease, the key goes
//
//   // client side: an EndpointSource
//   auto source = mesh::StoreEndpoints(store_client, "services/echo");
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "base/status.h"
#include "base/stop_signal.h"
#include "mesh/balancer.h"
#include "mesh/discovery.h"

namespace capstan::client {
class Client;
}

namespace capstan::mesh {

// "<prefix>/" with exactly one slash at the end.
std::string RegistryDirectory(std::string_view prefix);
std::string EncodeRegistryValue(const Endpoint& endpoint);
// `id` becomes the endpoint's id (the key below the prefix).
absl::StatusOr<Endpoint> DecodeRegistryValue(std::string_view id, std::string_view value);

struct StoreSourceOptions {
  // Between attempts when the store cannot be reached or the watch breaks
  // (the last good set stays in use meanwhile).
  std::chrono::milliseconds retry{500};
};
// Follows the prefix with a client::PrefixWatcher: lists it, then watches
// from the listed revision + 1; lists again after `retry` when the watch
// breaks (store restart, compaction), dropping instances gone meanwhile.
// Every listing and every batch of events delivers the whole set. Keys whose
// value does not decode are skipped with a warning.
std::unique_ptr<EndpointSource> StoreEndpoints(std::shared_ptr<client::Client> client,
                                               std::string prefix, StoreSourceOptions options = {});

struct RegistrationOptions {
  std::string prefix;
  // Below the prefix; "host:port" of the endpoint when empty.
  std::string id;
  Endpoint endpoint;
  // The lease's TTL: how long a dead instance stays in the set at most.
  std::chrono::seconds ttl{10};
};

// An instance's entry in the registry, kept alive until destroyed.
class Registration {
 public:
  // Grants the lease and writes the key; fails when the store cannot be
  // reached (a service usually should not start unregistered).
  static absl::StatusOr<std::unique_ptr<Registration>> Start(std::shared_ptr<client::Client> client,
                                                             RegistrationOptions options);
  // Deregisters (revokes the lease, which deletes the key).
  ~Registration();
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  const std::string& key() const { return key_; }
  int64_t lease_id() const { return lease_id_.load(); }
  // Times the lease was lost (expired while the store was unreachable) and
  // the key written again under a new one.
  int reregistrations() const { return reregistrations_.load(); }

 private:
  Registration(std::shared_ptr<client::Client> client, RegistrationOptions options);
  absl::Status Register();
  void KeepAlive();

  std::shared_ptr<client::Client> client_;
  RegistrationOptions options_;
  std::string key_;
  std::string value_;
  StopSignal stop_;
  std::atomic<int64_t> lease_id_{0};
  std::atomic<int> reregistrations_{0};
  std::thread keepalive_;
};

}  // namespace capstan::mesh
