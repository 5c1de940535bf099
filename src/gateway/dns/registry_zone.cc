#include "gateway/dns/registry_zone.h"

#include <arpa/inet.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "gateway/dns/message.h"
#include "mesh/registry.h"
#include "nlohmann/json.hpp"

namespace capstan::gateway::dns {

namespace {

bool ValidLabel(std::string_view s) {
  if (s.empty() || s.size() > kMaxLabel) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return false;
  }
  return true;
}

std::string LabelFromId(std::string_view id) {
  std::string out;
  for (char c : id) out.push_back(absl::ascii_isalnum(c) ? absl::ascii_tolower(c) : '-');
  if (out.empty()) out = "instance";
  if (out.size() > kMaxLabel) out.resize(kMaxLabel);
  return out;
}

std::string Prepend(std::string_view label, std::string_view name_wire) {
  std::string out;
  out.push_back(static_cast<char>(label.size()));
  out += label;
  out += name_wire;
  return out;
}

std::string CharString(std::string_view s) {
  if (s.size() > 255) s = s.substr(0, 255);
  std::string out(1, static_cast<char>(s.size()));
  out += s;
  return out;
}

void Append16(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Zone>> BuildRegistryZone(
    const RegistryZoneOptions& options, const std::map<std::string, std::string>& keys,
    uint32_t serial) {
  ASSIGN_OR_RETURN(std::string apex, NameFromText(options.zone, std::string(1, '\0')));
  auto zone = std::make_unique<Zone>(apex);
  // SOA: primary and mailbox under the zone; refresh/retry/expire are
  // nominal (nothing transfers this zone); minimum = the TTL.
  std::string soa = Prepend("ns", apex) + Prepend("hostmaster", apex);
  for (uint32_t v : {serial, 60u, 30u, 3600u, options.ttl}) {
    Append16(&soa, v >> 16);
    Append16(&soa, v & 0xffff);
  }
  zone->Add(apex, kTypeSOA, options.ttl, soa);
  std::string directory = mesh::RegistryDirectory(options.prefix);
  std::set<std::string> labels_used;
  for (const auto& [key, value] : keys) {
    if (!key.starts_with(directory)) continue;
    std::string_view rest = std::string_view(key).substr(directory.size());
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos || slash + 1 == rest.size()) continue;
    std::string service = absl::AsciiStrToLower(std::string(rest.substr(0, slash)));
    std::string id(rest.substr(slash + 1));
    if (!ValidLabel(service)) continue;
    auto endpoint = mesh::DecodeRegistryValue(id, value);
    if (!endpoint.ok()) continue;
    nlohmann::json metadata = nlohmann::json::object();
    if (!value.empty() && value.front() == '{') {
      auto parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_object() && parsed.contains("Metadata") && parsed["Metadata"].is_object()) {
        metadata = parsed["Metadata"];
      }
    }
    std::string service_name = Prepend(service, apex);
    std::string label = LabelFromId(id);
    for (int n = 2; !labels_used.insert(service + "/" + label).second; ++n) {
      std::string base = LabelFromId(id).substr(0, 56);
      label = absl::StrCat(base, "-", n);
    }
    std::string instance_name = Prepend(label, service_name);
    // Address records.
    char addr[16];
    std::string target = instance_name;
    if (inet_pton(AF_INET, endpoint->host.c_str(), addr) == 1) {
      zone->Add(service_name, kTypeA, options.ttl, std::string(addr, 4));
      zone->Add(instance_name, kTypeA, options.ttl, std::string(addr, 4));
    } else if (inet_pton(AF_INET6, endpoint->host.c_str(), addr) == 1) {
      zone->Add(service_name, kTypeAAAA, options.ttl, std::string(addr, 16));
      zone->Add(instance_name, kTypeAAAA, options.ttl, std::string(addr, 16));
    } else {
      auto host = NameFromText(endpoint->host + ".", std::string(1, '\0'));
      if (!host.ok()) continue;
      target = *host;
    }
    // SRV at the service name and at _<port_name>._<protocol>.<service>.
    std::string srv;
    Append16(&srv, 0);
    Append16(&srv, std::min<uint32_t>(endpoint->weight, 65535));
    Append16(&srv, static_cast<uint32_t>(endpoint->port));
    srv += target;
    zone->Add(service_name, kTypeSRV, options.ttl, srv);
    std::string port_name = "port", protocol = "tcp";
    if (metadata.contains("port_name") && metadata["port_name"].is_string()) {
      port_name = metadata["port_name"].get<std::string>();
    }
    if (metadata.contains("protocol") && metadata["protocol"].is_string()) {
      protocol = metadata["protocol"].get<std::string>();
    }
    if (ValidLabel(port_name) && ValidLabel(protocol)) {
      zone->Add(Prepend("_" + port_name, Prepend("_" + protocol, service_name)), kTypeSRV,
                options.ttl, srv);
    }
    // TXT: the instance and its metadata, one string per item.
    std::string txt = CharString("instance=" + id) +
                      CharString("addr=" + mesh::FormatHostPort(endpoint->host, endpoint->port));
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      std::string v = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      txt += CharString(it.key() + "=" + v);
    }
    zone->Add(service_name, kTypeTXT, options.ttl, txt);
    zone->Add(instance_name, kTypeTXT, options.ttl, txt);
  }
  RETURN_IF_ERROR(zone->Finish());
  return zone;
}

absl::StatusOr<std::unique_ptr<RegistryZoneWatcher>> RegistryZoneWatcher::Start(
    std::shared_ptr<client::Client> client, RegistryZoneOptions options, OnZone on_zone) {
  RETURN_IF_ERROR(NameFromText(options.zone, std::string(1, '\0')).status());
  std::unique_ptr<RegistryZoneWatcher> w(new RegistryZoneWatcher(options, std::move(on_zone)));
  // An empty zone until the first listing arrives: names are NXDOMAIN,
  // not REFUSED, from the start.
  {
    std::lock_guard lock(w->mu_);
    w->Apply({});
  }
  RegistryZoneWatcher* raw = w.get();
  w->watcher_ = client::PrefixWatcher::Start(std::move(client),
                                             {.prefix = mesh::RegistryDirectory(options.prefix),
                                              .retry = std::chrono::milliseconds(500),
                                              .what = "DNS discovery zone"},
                                             [raw](const std::vector<client::PrefixChange>& batch) {
                                               std::lock_guard lock(raw->mu_);
                                               raw->Apply(batch);
                                             });
  return w;
}

RegistryZoneWatcher::~RegistryZoneWatcher() { watcher_.reset(); }

uint64_t RegistryZoneWatcher::rebuilds() const {
  std::lock_guard lock(mu_);
  return rebuilds_;
}

// REQUIRES: mu_ held.
void RegistryZoneWatcher::Apply(const std::vector<client::PrefixChange>& batch) {
  for (const client::PrefixChange& c : batch) {
    // Only instances with a live lease: a key put without one (by hand, or
    // a leftover) would be served forever, since nothing expires it.
    if (c.value.has_value() && c.lease != 0) {
      keys_[c.key] = *c.value;
    } else {
      keys_.erase(c.key);
    }
  }
  // Serials grow with time and with every rebuild (RFC 1982 arithmetic is
  // not needed within a process's life).
  serial_ = std::max<uint32_t>(serial_ + 1, static_cast<uint32_t>(std::time(nullptr)));
  auto zone = BuildRegistryZone(options_, keys_, serial_);
  if (!zone.ok()) {
    CAPSTAN_LOG(err, "dns: the discovery zone did not build", "error",
                std::string(zone.status().message()));
    return;
  }
  ++rebuilds_;
  on_zone_(std::shared_ptr<const Zone>(std::move(zone).value()));
}

}  // namespace capstan::gateway::dns
