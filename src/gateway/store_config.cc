#include "gateway/store_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "gateway/edge/vm.h"

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
    if (rest.starts_with("functions/")) {
      changed |= OnFunctionChange(change, rest.substr(10));
      continue;
    }
    if (!route && !cluster) {
      CAPSTAN_LOG(warn, "gateway: ignoring a store key outside routes/, clusters/ and functions/",
                  "key", change.key);
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
  for (const auto& [key, f] : functions_) upsert(merged.edge_functions, f);
  absl::Status st = gateway_->Reload(std::move(merged));
  if (!st.ok()) {
    ++refused_;
    CAPSTAN_LOG(err, "gateway: configuration from the store refused; the last good one stays",
                "error", std::string(st.message()));
    return;
  }
  ++applied_;
  CAPSTAN_LOG(info, "gateway: configuration from the store applied", "virtual_hosts", hosts_.size(),
              "clusters", clusters_.size(), "edge_functions", functions_.size());
}

bool StoreConfig::OnFunctionChange(const client::PrefixChange& change, std::string_view name) {
  if (!change.value) return functions_.erase(change.key) > 0;
  if (!ValidEdgeFunctionName(name)) {
    ++refused_;
    CAPSTAN_LOG(err, "gateway: refusing an edge function: the key's last part is not a valid name",
                "key", change.key);
    return false;
  }
  // Compiled before it goes live: a broken version is refused here, and the
  // previous version of the key keeps running.
  edge::FunctionSource fn = edge::MakeSource(std::string(name), *change.value);
  absl::Status st =
      edge::Validate(fn, edge::Limits{.memory_bytes = base_.edge_limits.memory_bytes,
                                      .instructions = base_.edge_limits.instructions});
  if (!st.ok()) {
    ++refused_;
    CAPSTAN_LOG(err, "gateway: refusing an edge function version; the previous one stays", "key",
                change.key, "revision", change.mod_revision, "error", std::string(st.message()));
    return false;
  }
  EdgeFunctionConfig f;
  f.name = std::string(name);
  f.source = std::move(fn.source);
  f.store_revision = change.mod_revision;
  functions_[change.key] = std::move(f);
  CAPSTAN_LOG(info, "gateway: edge function version accepted", "function", std::string(name),
              "revision", change.mod_revision);
  return true;
}

}  // namespace capstan::gateway
