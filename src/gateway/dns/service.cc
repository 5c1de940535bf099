#include "gateway/dns/service.h"

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "gateway/store_config.h"
#include "mesh/discovery.h"

namespace capstan::gateway::dns {

namespace {

// Every file, or the first error (naming the file and line): a reload
// replaces all of them or none.
absl::StatusOr<std::vector<std::shared_ptr<const Zone>>> LoadZoneFiles(
    const std::vector<std::string>& files) {
  std::vector<std::shared_ptr<const Zone>> loaded;
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::unique_ptr<Zone> zone, LoadZoneFile(file));
    CAPSTAN_LOG(info, "dns: zone loaded", "file", file, "zone", NameToText(zone->origin()),
                "records", zone->record_count());
    std::shared_ptr<const Zone> shared(std::move(zone));
    for (const auto& z : loaded) {
      if (z->origin_lower() == shared->origin_lower()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": zone ", NameToText(shared->origin()), " is loaded twice"));
      }
    }
    loaded.push_back(std::move(shared));
  }
  return loaded;
}

}  // namespace

absl::Status DnsService::ReloadZoneFiles() {
  ASSIGN_OR_RETURN(std::vector<std::shared_ptr<const Zone>> loaded, LoadZoneFiles(zone_files_));
  std::lock_guard lock(publish_mu_);
  static_zones_ = std::move(loaded);
  PublishLocked();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DnsService>> DnsService::Start(const GatewayConfig& gateway,
                                                              net::LoopGroup* loops) {
  const DnsConfig& config = *gateway.dns;
  std::unique_ptr<DnsService> service(new DnsService());
  service->zone_files_ = config.zones;
  ASSIGN_OR_RETURN(service->static_zones_, LoadZoneFiles(config.zones));
  auto zones = std::make_shared<ZoneSet>();
  for (const auto& z : service->static_zones_) zones->Add(z);
  auto listen = mesh::ParseEndpoint(config.listen, /*allow_any_port=*/true);
  if (!listen.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns listen: ", std::string(listen.status().message())));
  }
  DnsServerOptions options;
  options.host = listen->host;
  options.port = listen->port;
  options.udp_sockets = config.udp_threads;  // 0: one per loop; capped at the loops
  options.udp_answer_slice = config.udp_answer_slice;
  options.udp_latency_metrics = config.udp_latency_metrics;
  options.answer.max_udp_payload = static_cast<uint16_t>(config.max_udp_payload);
  options.answer.minimal_responses = config.minimal_responses;
  options.max_tcp_connections = static_cast<size_t>(config.max_tcp_connections);
  options.tcp_idle_timeout = config.tcp_idle_timeout;
  options.rrl.responses_per_second = static_cast<uint32_t>(config.rate_limit);
  options.rrl.slip = static_cast<uint32_t>(config.rate_limit_slip);
  ASSIGN_OR_RETURN(service->server_, DnsServer::Start(options, loops, zones));
  if (!gateway.store.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> endpoints, StoreEndpointsOf(gateway.store));
    ASSIGN_OR_RETURN(std::unique_ptr<client::Client> client,
                     client::Client::Connect({.endpoints = endpoints}));
    service->store_zone_prefix_ = gateway.store_prefix + "dns/zones/";
    DnsService* raw = service.get();
    service->store_zones_watcher_ = client::PrefixWatcher::Start(
        std::shared_ptr<client::Client>(std::move(client)),
        {.prefix = service->store_zone_prefix_, .what = "DNS zones"},
        [raw](const std::vector<client::PrefixChange>& batch) { raw->OnStoreZones(batch); });
  }
  if (!config.registry.empty()) {
    // store://HOST:PORT[,HOST:PORT]/PREFIX
    std::string_view rest = config.registry;
    rest.remove_prefix(std::string_view("store://").size());
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos || slash + 1 == rest.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("dns registry ", config.registry, ": expected store://HOST:PORT/PREFIX"));
    }
    ASSIGN_OR_RETURN(
        std::vector<std::string> endpoints,
        StoreEndpointsOf(absl::StrCat("store://", std::string(rest.substr(0, slash)))));
    ASSIGN_OR_RETURN(std::unique_ptr<client::Client> client,
                     client::Client::Connect({.endpoints = endpoints}));
    RegistryZoneOptions registry;
    registry.zone = config.registry_zone;
    registry.prefix = std::string(rest.substr(slash + 1));
    registry.ttl = static_cast<uint32_t>(config.registry_ttl.count() / 1000);
    DnsService* raw = service.get();
    ASSIGN_OR_RETURN(service->registry_,
                     RegistryZoneWatcher::Start(std::shared_ptr<client::Client>(std::move(client)),
                                                registry, [raw](std::shared_ptr<const Zone> zone) {
                                                  raw->Publish(std::move(zone));
                                                }));
  }
  return service;
}

DnsService::~DnsService() {
  registry_.reset();
  store_zones_watcher_.reset();
  if (server_ != nullptr) server_->Stop();
}

uint64_t DnsService::store_zones_refused() {
  std::lock_guard lock(publish_mu_);
  return store_zones_refused_;
}

void DnsService::Publish(std::shared_ptr<const Zone> discovery) {
  std::lock_guard lock(publish_mu_);
  discovery_ = std::move(discovery);
  PublishLocked();
}

void DnsService::OnStoreZones(const std::vector<client::PrefixChange>& batch) {
  std::lock_guard lock(publish_mu_);
  bool changed = false;
  for (const client::PrefixChange& change : batch) {
    if (!change.value) {
      changed |= store_zones_.erase(change.key) > 0;
      continue;
    }
    // The key's last part is the apex ("example.com." or "example.com").
    std::string apex = change.key.substr(store_zone_prefix_.size());
    if (!apex.ends_with('.')) apex += '.';
    auto zone = ParseZone(*change.value, apex, change.key);
    if (!zone.ok()) {
      ++store_zones_refused_;
      CAPSTAN_LOG(err, "dns: refusing a zone document; the previous version stays", "key",
                  change.key, "error", std::string(zone.status().message()));
      continue;
    }
    CAPSTAN_LOG(info, "dns: zone from the store", "key", change.key, "records",
                (*zone)->record_count());
    store_zones_[change.key] = std::shared_ptr<const Zone>(std::move(zone).value());
    changed = true;
  }
  if (changed) PublishLocked();
}

void DnsService::PublishLocked() {
  auto zones = std::make_shared<ZoneSet>();
  for (const auto& z : static_zones_) zones->Add(z);
  for (const auto& [key, z] : store_zones_) zones->Add(z);  // over a file's zone of the same apex
  if (discovery_ != nullptr) zones->Add(discovery_);        // over both
  if (server_ != nullptr) server_->SetZones(std::move(zones));
}

}  // namespace capstan::gateway::dns
