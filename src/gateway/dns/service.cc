#include "gateway/dns/service.h"

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "gateway/store_config.h"
#include "mesh/discovery.h"

namespace capstan::gateway::dns {

absl::StatusOr<std::unique_ptr<DnsService>> DnsService::Start(const DnsConfig& config,
                                                              net::LoopGroup* loops) {
  std::unique_ptr<DnsService> service(new DnsService());
  auto zones = std::make_shared<ZoneSet>();
  for (const std::string& file : config.zones) {
    ASSIGN_OR_RETURN(std::unique_ptr<Zone> zone, LoadZoneFile(file));
    CAPSTAN_LOG(info, "dns: zone loaded", "file", file, "zone", NameToText(zone->origin()),
                "records", zone->record_count());
    std::shared_ptr<const Zone> shared(std::move(zone));
    for (const auto& z : service->static_zones_) {
      if (z->origin_lower() == shared->origin_lower()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": zone ", NameToText(shared->origin()), " is loaded twice"));
      }
    }
    service->static_zones_.push_back(shared);
    zones->Add(shared);
  }
  auto listen = mesh::ParseEndpoint(config.listen, /*allow_any_port=*/true);
  if (!listen.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns listen: ", std::string(listen.status().message())));
  }
  DnsServerOptions options;
  options.host = listen->host;
  options.port = listen->port;
  options.udp_threads = config.udp_threads > 0 ? config.udp_threads : loops->size();
  options.answer.max_udp_payload = static_cast<uint16_t>(config.max_udp_payload);
  options.max_tcp_connections = static_cast<size_t>(config.max_tcp_connections);
  options.tcp_idle_timeout = config.tcp_idle_timeout;
  options.rrl.responses_per_second = static_cast<uint32_t>(config.rate_limit);
  options.rrl.slip = static_cast<uint32_t>(config.rate_limit_slip);
  ASSIGN_OR_RETURN(service->server_, DnsServer::Start(options, loops, zones));
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
  if (server_ != nullptr) server_->Stop();
}

void DnsService::Publish(std::shared_ptr<const Zone> discovery) {
  std::lock_guard lock(publish_mu_);
  auto zones = std::make_shared<ZoneSet>();
  for (const auto& z : static_zones_) zones->Add(z);
  zones->Add(std::move(discovery));  // a registry zone shadows a file of the same apex
  if (server_ != nullptr) server_->SetZones(std::move(zones));
}

}  // namespace capstan::gateway::dns
