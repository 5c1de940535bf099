// StoreConfig: the gateway's live configuration from the store. Virtual
// hosts live one per key under `<prefix>routes/<name>` and clusters under
// `<prefix>clusters/<name>` (YAML or JSON documents in the formats of
// docs/gateway.md), edge functions under `<prefix>functions/<name>` (the
// Lua source as it is; compiled before it is accepted); they are merged over the file's
// configuration (a store document replaces the file's entry of the same name) and the gateway is
// reloaded on every change — requests in flight keep the snapshot they
// started with.
//
// A document that does not parse is refused with an error log naming its
// key; the previous version of that key stays in force. While the store is
// unreachable the gateway keeps serving the last configuration it applied.
//
//   auto live = StoreConfig::Start(gateway, file_config, client).value();
//
// Thread-safety: changes are applied on the watcher's threads; Reload is
// safe from there. Destroy before the gateway.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "client/client.h"
#include "client/prefix_watcher.h"
#include "gateway/config.h"
#include "gateway/gateway.h"

namespace capstan::gateway {

class StoreConfig {
 public:
  static std::unique_ptr<StoreConfig> Start(Gateway* gateway, GatewayConfig base,
                                            std::shared_ptr<client::Client> client);
  ~StoreConfig();

  uint64_t applied() const { return applied_.load(); }  // reloads that took effect
  uint64_t refused() const { return refused_.load(); }  // documents or reloads refused

 private:
  StoreConfig(Gateway* gateway, GatewayConfig base) : gateway_(gateway), base_(std::move(base)) {}
  void OnChange(const std::vector<client::PrefixChange>& batch);
  // A document under functions/: the function's Lua source. Whether the
  // set of functions changed.
  bool OnFunctionChange(const client::PrefixChange& change, std::string_view name);

  Gateway* gateway_;
  GatewayConfig base_;
  std::map<std::string, VirtualHostConfig> hosts_;       // by key
  std::map<std::string, ClusterConfig> clusters_;        // by key
  std::map<std::string, EdgeFunctionConfig> functions_;  // by key
  std::atomic<uint64_t> applied_{0}, refused_{0};
  std::unique_ptr<client::PrefixWatcher> watcher_;
};

// "store://127.0.0.1:2379[,HOST:PORT...]" -> the client's endpoints.
absl::StatusOr<std::vector<std::string>> StoreEndpointsOf(std::string_view url);

}  // namespace capstan::gateway
