#include "gateway/store_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"

namespace capstan::gateway {

absl::StatusOr<std::vector<std::string>> StoreEndpointsOf(std::string_view url) {
  if (!url.starts_with("store://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: '", std::string(url), "' is not store://HOST:PORT[,HOST:PORT]"));
  }
  url.remove_prefix(8);
  while (url.ends_with('/')) url.remove_suffix(1);
  std::vector<std::string> out;
  for (absl::string_view e :
       absl::StrSplit(absl::string_view(url.data(), url.size()), ',', absl::SkipEmpty())) {
    out.emplace_back(e);
  }
  if (out.empty()) return absl::InvalidArgumentError("store: no endpoints");
  return out;
}

std::unique_ptr<StoreConfig> StoreConfig::Start(Gateway* gateway, GatewayConfig base,
                                                std::shared_ptr<client::Client> client) {
  std::unique_ptr<StoreConfig> live(new StoreConfig(gateway, std::move(base)));
  client::PrefixWatcherOptions options;
  options.prefix = live->base_.store_prefix;
  options.what = "gateway configuration";
  live->watcher_ = client::PrefixWatcher::Start(
      std::move(client), options,
      [raw = live.get()](const std::vector<client::PrefixChange>& batch) { raw->OnChange(batch); });
  return live;
}

StoreConfig::~StoreConfig() { watcher_.reset(); }

void StoreConfig::OnChange(const std::vector<client::PrefixChange>& batch) {
  const std::string& prefix = base_.store_prefix;
  bool changed = false;
  for (const client::PrefixChange& change : batch) {
    std::string_view rest = std::string_view(change.key).substr(prefix.size());
    if (rest.starts_with("dns/")) continue;  // the DNS server's own (gateway/dns/service.h)
    bool route = rest.starts_with("routes/");
    bool cluster = rest.starts_with("clusters/");
    if (!route && !cluster) {
      CAPSTAN_LOG(warn, "gateway: ignoring a store key outside routes/ and clusters/", "key",
                  change.key);
      continue;
    }
    if (!change.value) {
      changed |= route ? hosts_.erase(change.key) > 0 : clusters_.erase(change.key) > 0;
      continue;
    }
    if (route) {
      auto vh = ParseVirtualHostDocument(*change.value, change.key);
      if (!vh.ok()) {
        ++refused_;
        CAPSTAN_LOG(err, "gateway: refusing a route document; the previous one stays", "key",
                    change.key, "error", std::string(vh.status().message()));
        continue;
      }
      hosts_[change.key] = *std::move(vh);
    } else {
      auto c = ParseClusterDocument(*change.value, change.key);
      if (!c.ok()) {
        ++refused_;
        CAPSTAN_LOG(err, "gateway: refusing a cluster document; the previous one stays", "key",
                    change.key, "error", std::string(c.status().message()));
        continue;
      }
      clusters_[change.key] = *std::move(c);
    }
    changed = true;
  }
  if (!changed) return;
  // The file's configuration with the store's documents over it, by name.
  GatewayConfig merged = base_;
  auto upsert = [](auto& list, const auto& item) {
    for (auto& existing : list) {
      if (existing.name == item.name) {
        existing = item;
        return;
      }
    }
    list.push_back(item);
  };
  for (const auto& [key, vh] : hosts_) upsert(merged.virtual_hosts, vh);
  for (const auto& [key, c] : clusters_) upsert(merged.clusters, c);
  absl::Status st = gateway_->Reload(std::move(merged));
  if (!st.ok()) {
    ++refused_;
    CAPSTAN_LOG(err, "gateway: configuration from the store refused; the last good one stays",
                "error", std::string(st.message()));
    return;
  }
  ++applied_;
  CAPSTAN_LOG(info, "gateway: configuration from the store applied", "virtual_hosts", hosts_.size(),
              "clusters", clusters_.size());
}

}  // namespace capstan::gateway
