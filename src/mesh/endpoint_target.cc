#include "mesh/endpoint_target.h"

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "mesh/registry.h"

namespace capstan::mesh {

absl::StatusOr<std::unique_ptr<EndpointSource>> NewEndpointSource(std::string_view target) {
  constexpr std::string_view kForms =
      "expected static:///host:port,..., dns:///host:port or store://host:port[,...]/prefix";
  size_t sep = target.find("://");
  std::string_view scheme = sep == std::string_view::npos ? "" : target.substr(0, sep);
  std::string_view rest = sep == std::string_view::npos ? target : target.substr(sep + 3);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint target '", std::string(target),
                                                   "': ", why, " (", std::string(kForms), ")"));
  };
  if (scheme.empty() || scheme == "static") {
    if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    absl::StatusOr<std::vector<Endpoint>> list = ParseEndpointList(rest);
    if (!list.ok()) return bad(list.status().message());
    return StaticEndpoints(*std::move(list));
  }
  if (scheme == "dns") {
    if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    absl::StatusOr<Endpoint> e = ParseEndpoint(rest);
    if (!e.ok()) return bad(e.status().message());
    return DnsEndpoints(e->host, e->port);
  }
  if (scheme == "store" || scheme == "etcd") {
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == rest.size()) {
      return bad("needs the store's endpoints and a prefix");
    }
    absl::StatusOr<std::vector<Endpoint>> stores = ParseEndpointList(rest.substr(0, slash));
    if (!stores.ok()) return bad(stores.status().message());
    client::ClientOptions options;
    for (const Endpoint& e : *stores) options.endpoints.push_back(e.id);
    absl::StatusOr<std::unique_ptr<client::Client>> client = client::Client::Connect(options);
    if (!client.ok()) return client.status();
    return StoreEndpoints(std::shared_ptr<client::Client>(*std::move(client)),
                          std::string(rest.substr(slash + 1)));
  }
  return bad(absl::StrCat("unknown scheme '", std::string(scheme), "'"));
}

}  // namespace capstan::mesh
