// Fuzz target: routing a request — host normalization, the virtual-host
// lookup, path / method / header / query matching (RE2 included) and query
// parameter decoding — on a fixed table, with every request field taken
// from the input. Invariants: no crash; NormalizeHost is idempotent and
// yields no upper-case letter; an exact-path route only matches its path;
// a split always picks one of its clusters.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config.h"
#include "gateway/router.h"

namespace {

constexpr std::string_view kTable = R"(
store: store://127.0.0.1:2379
virtual_hosts:
  - name: exact
    domains: [api.example.com]
    routes:
      - {name: health, match: {path: /health}, direct_response: {status: 200}}
      - {name: users, match: {regex: "/users/[0-9]+(/.*)?"}, cluster: users}
      - name: canary
        match: {prefix: /v1/, headers: [{name: x-canary, regex: "on|yes"}], query: [{name: q, regex: "[a-z]*"}]}
        split: [{cluster: a, weight: 3}, {cluster: b, weight: 1}]
      - {name: rest, match: {prefix: /, case_sensitive: false}, cluster: a}
  - name: wild
    domains: ["*.example.com", "*"]
    routes:
      - {name: any, match: {prefix: /, methods: [GET, POST]}, cluster: b}
)";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto* table = [] {
    auto config = capstan::gateway::ParseGatewayConfig(kTable, "table");
    if (!config.ok()) std::abort();
    auto built = capstan::gateway::RouteTable::Build(config->virtual_hosts);
    if (!built.ok()) std::abort();
    return new std::shared_ptr<const capstan::gateway::RouteTable>(*built);
  }();
  // Fields separated by '\n': host, method, path, query, x-canary value.
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> fields;
  while (fields.size() < 4) {
    size_t nl = input.find('\n');
    fields.push_back(input.substr(0, nl));
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
  }
  fields.push_back(input);
  std::string host = capstan::gateway::NormalizeHost(fields[0]);
  if (capstan::gateway::NormalizeHost(host) != host) std::abort();
  for (char c : host) {
    if (c >= 'A' && c <= 'Z') std::abort();
  }
  std::string_view canary = fields[4];
  auto lookup = [canary](std::string_view name) -> std::optional<std::string_view> {
    if (name == "x-canary") return canary;
    return std::nullopt;
  };
  (void)capstan::gateway::FindQueryParameter(fields[3], "q");
  capstan::gateway::RequestView request{host, fields[1], fields[2], fields[3], lookup};
  const capstan::gateway::Route* route = (*table)->Match(request);
  if (route == nullptr) return 0;
  if (route->config().name == "health" && fields[2] != "/health") std::abort();
  if (!route->config().split.empty()) {
    const std::string& picked = route->PickCluster(size);
    if (picked != "a" && picked != "b") std::abort();
  }
  (void)route->RewritePath(fields[2]);
  return 0;
}
