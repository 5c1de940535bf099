// The discovery zone: DNS records generated from the store's service
// registry (mesh/registry.h), so that anything that speaks DNS finds the
// live instances of a service.
//
// With the registry prefix "services" and the zone "svc.capstan.", an
// instance key services/echo/<id> with the value
// {"Addr":"10.0.0.7:7000","Metadata":{"weight":2,"zone":"eu"}} gives:
//
//   echo.svc.capstan.               A     10.0.0.7            (AAAA for IPv6)
//   echo.svc.capstan.               SRV   0 2 7000 <inst>.echo.svc.capstan.
//   echo.svc.capstan.               TXT   "instance=<id>" "addr=10.0.0.7:7000" "weight=2" "zone=eu"
//   _port._tcp.echo.svc.capstan.    SRV   0 2 7000 <inst>.echo.svc.capstan.
//   <inst>.echo.svc.capstan.        A     10.0.0.7
//   <inst>.echo.svc.capstan.        TXT   (as above)
//
// where <inst> is the id made a DNS label (characters other than letters,
// digits and '-' become '-'). Metadata "port_name" and "protocol" rename
// the SRV owner (_http._udp...); "weight" is the SRV weight. An instance
// whose host is a name, not an address, has no A record and its SRV target
// is that name. Service names that are not valid DNS labels are skipped.
//
// Only live instances appear: an instance key is attached to its lease, so
// the store deletes it when the lease expires or is revoked, and the watch
// delivers that deletion like any other change. A key written without a
// lease is not an instance's and is left out (nothing would ever expire it). The zone is rebuilt
// and handed on after every batch of watch events (no polling), with a fresh SOA serial.
//
// Thread-safety: BuildRegistryZone is a pure function. RegistryZoneWatcher
// calls `on_zone` on the watcher's threads, one call at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"
#include "client/client.h"
#include "client/prefix_watcher.h"
#include "gateway/dns/zone.h"

namespace capstan::gateway::dns {

struct RegistryZoneOptions {
  std::string zone = "svc.capstan.";  // presentation form
  std::string prefix = "services";    // keys are <prefix>/<service>/<id>
  uint32_t ttl = 5;                   // of every record, and the negative TTL
};

// keys: full store keys -> values, as listed/watched under the prefix.
absl::StatusOr<std::unique_ptr<Zone>> BuildRegistryZone(
    const RegistryZoneOptions& options, const std::map<std::string, std::string>& keys,
    uint32_t serial);

class RegistryZoneWatcher {
 public:
  using OnZone = std::function<void(std::shared_ptr<const Zone>)>;
  static absl::StatusOr<std::unique_ptr<RegistryZoneWatcher>> Start(
      std::shared_ptr<client::Client> client, RegistryZoneOptions options, OnZone on_zone);
  // Stops the watch; on_zone does not run after this returns.
  ~RegistryZoneWatcher();

  uint64_t rebuilds() const;

 private:
  RegistryZoneWatcher(RegistryZoneOptions options, OnZone on_zone)
      : options_(std::move(options)), on_zone_(std::move(on_zone)) {}
  void Apply(const std::vector<client::PrefixChange>& batch);

  RegistryZoneOptions options_;
  OnZone on_zone_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> keys_;         // guarded by mu_
  uint32_t serial_ = 0;                             // guarded by mu_
  uint64_t rebuilds_ = 0;                           // guarded by mu_
  std::unique_ptr<client::PrefixWatcher> watcher_;  // last: stops first
};

}  // namespace capstan::gateway::dns
