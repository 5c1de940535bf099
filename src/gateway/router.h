// RouteTable: the compiled form of the virtual hosts and routes, which picks
// the route for a request.
//
// A request's host (Host or :authority, port removed, lowercase) selects a
// virtual host: an exact domain first, then the longest "*.suffix" that
// matches, then "*". Its routes are tried in order; the first whose match
// holds wins (path exact / prefix / RE2 regex over the whole path, methods,
// headers, query parameters). No virtual host or no route: the caller
// answers 404.
//
//   auto table = RouteTable::Build(config.virtual_hosts).value();
//   RequestView req{.host = "api.example.com", .method = "GET", .path = "/v1/x",
//                   .query = "debug=1", .header = lookup};
//   const Route* route = table->Match(req);
//
// A table is immutable once built and shared by every loop
// (std::shared_ptr<const RouteTable>); a configuration change builds a new
// one and swaps it in, so requests in flight keep the route they matched.
// Regexes are RE2: linear time, so a route from the store cannot be made to
// take the gateway down by backtracking.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "base/status.h"
#include "gateway/config.h"

namespace re2 {
class RE2;
}

namespace capstan::gateway {

// What routing looks at. Views into the request; valid during Match.
struct RequestView {
  std::string_view host;    // lowercase, without the port
  std::string_view method;  // as sent (methods are case-sensitive)
  std::string_view path;    // without the query
  std::string_view query;   // after '?', empty when none
  // The first value of a header by lowercase name, or nullopt.
  absl::FunctionRef<std::optional<std::string_view>(std::string_view)> header;
};

class Route {
 public:
  explicit Route(RouteConfig config);
  ~Route();
  Route(Route&&) noexcept;
  Route(const Route&) = delete;
  Route& operator=(const Route&) = delete;

  const RouteConfig& config() const { return config_; }
  const std::string& virtual_host() const { return virtual_host_; }
  // Position in the table (0..route_count()-1), for per-route state kept
  // beside the table.
  size_t index() const { return index_; }
  // "virtual_host/route name" (or "/#N" for an unnamed route): the label of
  // its metrics and log lines.
  std::string label() const;
  // Whether the request matches (the host has been matched already).
  bool Matches(const RequestView& request) const;
  // For a forwarding route: the cluster for this request. A split picks by
  // weight from `draw` (a random number, or a hash of the split's sticky
  // header so one unit always lands on the same side).
  const std::string& PickCluster(uint64_t draw) const;
  // The path to send upstream (prefix_rewrite applied).
  std::string RewritePath(std::string_view path) const;

 private:
  friend class RouteTable;
  absl::Status Compile();
  struct CompiledHeader;
  struct CompiledQuery;

  RouteConfig config_;
  std::string virtual_host_;
  size_t index_ = 0;
  std::unique_ptr<re2::RE2> path_regex_;
  std::vector<CompiledHeader> headers_;
  std::vector<CompiledQuery> query_;
  std::vector<uint64_t> split_cumulative_;  // running sum of weights
};

class RouteTable {
 public:
  // Compiles the virtual hosts. Fails on a regex RE2 refuses or a domain
  // claimed by two virtual hosts.
  static absl::StatusOr<std::shared_ptr<const RouteTable>> Build(
      const std::vector<VirtualHostConfig>& virtual_hosts);

  // The route for `request`, or null (404).
  const Route* Match(const RequestView& request) const;
  size_t route_count() const;
  // Every route, in table order.
  template <typename Fn>
  void ForEachRoute(Fn fn) const {
    for (const Host& h : hosts_) {
      for (const Route& r : h.routes) fn(r);
    }
  }

 private:
  struct Host {
    std::string name;
    std::vector<Route> routes;
  };
  const Host* FindHost(std::string_view host) const;

  std::vector<Host> hosts_;
  absl::flat_hash_map<std::string, const Host*> exact_;
  // "*.suffix" as ".suffix", longest first.
  std::vector<std::pair<std::string, const Host*>> suffixes_;
  const Host* any_ = nullptr;
};

// The request's Host value as routing wants it: lowercase, without the port
// ("Example.com:8080" -> "example.com", "[::1]:80" -> "[::1]").
std::string NormalizeHost(std::string_view host);

// The value of query parameter `name` ("a=1&b=2"), percent-decoded, or
// nullopt when absent (a name without '=' has an empty value).
std::optional<std::string> FindQueryParameter(std::string_view query, std::string_view name);

}  // namespace capstan::gateway
