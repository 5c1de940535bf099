// DnsService: the gateway's DNS server as configured (config.h, DnsConfig):
// the zone files loaded, the discovery zone followed in the store, both
// served by one DnsServer. Zone files are read once at start; the discovery
// zone changes with every registry event.
//
//   auto dns = dns::DnsService::Start(*config.dns, loops);   // loops outlive it
//   dns->port();
//
// Thread-safety: construction and destruction on one thread; the registry
// watcher's threads publish new zone sets to the server.
#pragma once

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
  static absl::StatusOr<std::unique_ptr<DnsService>> Start(const DnsConfig& config,
                                                           net::LoopGroup* loops);
  ~DnsService();

  int port() const { return server_->port(); }
  DnsServer& server() { return *server_; }

 private:
  DnsService() = default;
  void Publish(std::shared_ptr<const Zone> discovery);

  std::vector<std::shared_ptr<const Zone>> static_zones_;
  std::unique_ptr<DnsServer> server_;
  std::mutex publish_mu_;                          // one zone set built at a time
  std::unique_ptr<RegistryZoneWatcher> registry_;  // last: stops first
};

}  // namespace capstan::gateway::dns
