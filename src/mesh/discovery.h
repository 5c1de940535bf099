// Endpoint sources: where a client learns which endpoints serve a service,
// and learns again when that changes. A source hands its consumer the whole
// current set on every change (the consumer diffs by Endpoint::id), from the
// source's own thread.
//
//   auto source = mesh::DnsEndpoints("echo.internal", 7000);
//   source->Start([](std::vector<mesh::Endpoint> set) { ... post to a loop ... });
//   ...
//   source.reset();   // stops; no callback runs after the destructor returns
//
// The store's registry is a source too (registry.h); a target string names
// any of them (endpoint_target.h), and DiscoveryHub (discovery_hub.h) shares
// one source per target across loops. This file is the bottom of that
// stack: it knows neither the store nor the registry.
//
// Thread-safety: Start once; destroy from any thread but the callback's.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "mesh/balancer.h"

namespace capstan::mesh {

using EndpointsCallback = std::function<void(std::vector<Endpoint>)>;

class EndpointSource {
 public:
  // Stops the source: when it returns, the callback is not running and will
  // not run again.
  virtual ~EndpointSource() = default;
  virtual void Start(EndpointsCallback on_update) = 0;
  // For logs and /status: "dns:///echo.internal:7000".
  virtual std::string Describe() const = 0;
};

// "host:port" (IPv6 as "[::1]:7000") into an Endpoint whose id is the text.
// With allow_any_port, port 0 ("any free port", for listen addresses) is
// accepted too.
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view host_port, bool allow_any_port = false);
// The inverse: "10.0.0.7:7000", "[::1]:7000".
std::string FormatHostPort(const std::string& host, int port);

// Delivers `endpoints` once, at Start.
std::unique_ptr<EndpointSource> StaticEndpoints(std::vector<Endpoint> endpoints);

struct DnsOptions {
  std::chrono::milliseconds refresh{30000};
  // After a failed lookup (the last good set stays in use).
  std::chrono::milliseconds retry{1000};
};
// Resolves `host` (getaddrinfo: /etc/hosts, then DNS) on a thread of its own
// and delivers the addresses with `port` whenever the answer changes.
std::unique_ptr<EndpointSource> DnsEndpoints(std::string host, int port, DnsOptions options = {});

// "host:port,host:port" (whitespace around items allowed); INVALID_ARGUMENT
// for an empty list or a bad item.
absl::StatusOr<std::vector<Endpoint>> ParseEndpointList(std::string_view list);

}  // namespace capstan::mesh
