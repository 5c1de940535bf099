// Fuzz target: the gateway's configuration loader and the route table built
// from what it accepts. Any text must give a configuration or an error that
// names the source — never a crash, an exception or a hang — and whatever
// parses must compile into a table (or be refused with an error) that
// matches a few requests without crashing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gateway/config.h"
#include "gateway/router.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = capstan::gateway::ParseGatewayConfig(text, "fuzz.yaml");
  if (!config.ok()) {
    if (config.status().message().substr(0, 9) != "fuzz.yaml") std::abort();
    return 0;
  }
  auto table = capstan::gateway::RouteTable::Build(config->virtual_hosts);
  if (!table.ok()) return 0;
  auto lookup = [](std::string_view name) -> std::optional<std::string_view> {
    if (name == "x-user") return "42";
    return std::nullopt;
  };
  for (std::string_view path : {"/", "/api/v1/x", "/health", ""}) {
    capstan::gateway::RequestView request{"example.com", "GET", path, "a=1&debug", lookup};
    const capstan::gateway::Route* route = (*table)->Match(request);
    if (route == nullptr) continue;
    const auto& rc = route->config();
    if (rc.cluster || !rc.split.empty()) (void)route->PickCluster(12345);
    (void)route->RewritePath(path);
  }
  return 0;
}
