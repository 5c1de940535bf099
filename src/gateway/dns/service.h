// DnsService: the gateway's DNS server as configured (config.h, DnsConfig):
// the zone files loaded, zones kept as documents in the store, the
// discovery zone followed in the registry, all served by one DnsServer.
// Zone files are read at start and again by ReloadZoneFiles (the gateway's
// SIGHUP); store zones and the discovery zone change with every watch event.
//
// Store zones (with the gateway's `store:` set): one document per zone at
// <store_prefix>dns/zones/<apex> (e.g. /capstan/gateway/dns/zones/example.com.)
// holding the zone's master-file text. A document that does not parse is
// refused with an error naming the key and line, and the zone's last good
// version stays; deleting the key removes the zone. A store zone replaces a
// file's zone of the same apex; the discovery zone replaces both.
//
//   auto dns = dns::DnsService::Start(config, loops);   // loops outlive it
//   dns->port();
//
// Thread-safety: construction and destruction on one thread; the registry
// watcher's threads publish new zone sets to the server.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "base/status.h"
#include "gateway/config.h"
#include "gateway/dns/registry_zone.h"
#include "gateway/dns/server.h"

namespace capstan::gateway::dns {

class DnsService {
 public:
  // REQUIRES: config.dns is set.
  static absl::StatusOr<std::unique_ptr<DnsService>> Start(const GatewayConfig& config,
                                                           net::LoopGroup* loops);
  ~DnsService();

  // Reads the zone files again; all of them replace the served ones, or, on
  // an error (naming the file and line), none do and the old ones stay.
  absl::Status ReloadZoneFiles();

  int port() const { return server_->port(); }
  uint64_t store_zones_refused();
  DnsServer& server() { return *server_; }

 private:
  DnsService() = default;
  void Publish(std::shared_ptr<const Zone> discovery);
  // REQUIRES: publish_mu_ held. Builds the zone set and hands it on.
  void PublishLocked();
  void OnStoreZones(const std::vector<client::PrefixChange>& batch);

  std::vector<std::string> zone_files_;
  std::vector<std::shared_ptr<const Zone>> static_zones_;  // publish_mu_ once started
  std::unique_ptr<DnsServer> server_;
  std::string store_zone_prefix_;
  std::mutex publish_mu_;
  std::shared_ptr<const Zone> discovery_;                           // guarded by publish_mu_
  std::map<std::string, std::shared_ptr<const Zone>> store_zones_;  // by key; publish_mu_
  uint64_t store_zones_refused_ = 0;                                // guarded by publish_mu_
  // Last: they stop before the rest goes.
  std::unique_ptr<client::PrefixWatcher> store_zones_watcher_;
  std::unique_ptr<RegistryZoneWatcher> registry_;
};

}  // namespace capstan::gateway::dns
