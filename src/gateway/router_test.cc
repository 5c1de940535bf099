#include "gateway/router.h"

#include <map>

#include "gtest/gtest.h"

namespace capstan::gateway {
namespace {

// Builds a table from YAML virtual hosts (the config parser's own format).
std::shared_ptr<const RouteTable> Table(std::string_view yaml) {
  auto config = ParseGatewayConfig(yaml, "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  auto table = RouteTable::Build(config->virtual_hosts);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : nullptr;
}

struct Request {
  std::string host = "example.com", method = "GET", path = "/", query;
  std::map<std::string, std::string> headers;
};

// The matched route's name, or "" for none.
std::string Match(const RouteTable& table, const Request& r) {
  auto lookup = [&](std::string_view name) -> std::optional<std::string_view> {
    auto it = r.headers.find(std::string(name));
    if (it == r.headers.end()) return std::nullopt;
    return std::string_view(it->second);
  };
  RequestView view{r.host, r.method, r.path, r.query, lookup};
  const Route* route = table.Match(view);
  return route == nullptr ? "" : route->config().name;
}

constexpr std::string_view kHosts = R"(
clusters:
  - {name: a, endpoints: [127.0.0.1:1]}
  - {name: b, endpoints: [127.0.0.1:2]}
virtual_hosts:
  - name: exact
    domains: [api.example.com]
    routes:
      - {name: api, cluster: a}
  - name: wildcard
    domains: ["*.example.com"]
    routes:
      - {name: sub, cluster: a}
  - name: deeper
    domains: ["*.eu.example.com"]
    routes:
      - {name: eu, cluster: a}
  - name: default
    domains: ["*"]
    routes:
      - {name: any, cluster: b}
)";

TEST(RouteTableTest, HostsMatchExactThenLongestSuffixThenAny) {
  auto table = Table(kHosts);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Match(*table, {.host = "api.example.com"}), "api");
  EXPECT_EQ(Match(*table, {.host = "www.example.com"}), "sub");
  EXPECT_EQ(Match(*table, {.host = "x.eu.example.com"}), "eu");
  // "*.example.com" does not match the bare domain.
  EXPECT_EQ(Match(*table, {.host = "example.com"}), "any");
  EXPECT_EQ(Match(*table, {.host = "other.org"}), "any");
}

TEST(RouteTableTest, NormalizeHostDropsPortCaseAndTrailingDot) {
  EXPECT_EQ(NormalizeHost("API.Example.com:8080"), "api.example.com");
  EXPECT_EQ(NormalizeHost("example.com."), "example.com");
  EXPECT_EQ(NormalizeHost("[::1]:80"), "[::1]");
  EXPECT_EQ(NormalizeHost("[::1]"), "[::1]");
}

TEST(RouteTableTest, RoutesAreTriedInOrderOnPathMethodHeadersAndQuery) {
  auto table = Table(R"(
clusters: [{name: a, endpoints: [127.0.0.1:1]}]
virtual_hosts:
  - name: h
    routes:
      - {name: exact, match: {path: /health}, direct_response: {status: 200, body: ok}}
      - {name: regex, match: {regex: "/users/[0-9]+"}, cluster: a}
      - {name: post-only, match: {prefix: /api/, methods: [POST]}, cluster: a}
      - name: canary
        match:
          prefix: /api/
          headers: [{name: X-Canary, exact: "1"}]
        cluster: a
      - name: debug
        match:
          prefix: /api/
          query: [{name: debug, present: true}]
        cluster: a
      - name: no-auth
        match:
          prefix: /api/
          headers: [{name: authorization, present: false}]
        cluster: a
      - {name: insensitive, match: {prefix: /CaSe/, case_sensitive: false}, cluster: a}
      - {name: rest, cluster: a}
)");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Match(*table, {.path = "/health"}), "exact");
  EXPECT_EQ(Match(*table, {.path = "/health/x"}), "rest");
  EXPECT_EQ(Match(*table, {.path = "/users/42"}), "regex");
  EXPECT_EQ(Match(*table, {.path = "/users/42/x"}), "rest");  // regex is whole-path
  EXPECT_EQ(Match(*table, {.method = "POST", .path = "/api/x"}), "post-only");
  EXPECT_EQ(Match(*table, {.path = "/api/x", .headers = {{"x-canary", "1"}}}), "canary");
  EXPECT_EQ(Match(*table, {.path = "/api/x", .headers = {{"x-canary", "2"}}}), "no-auth");
  EXPECT_EQ(Match(*table, {.path = "/api/x", .query = "a=1&debug"}), "debug");
  EXPECT_EQ(
      Match(*table,
            {.path = "/api/x", .query = "a=1&debugger=1", .headers = {{"authorization", "x"}}}),
      "rest");
  EXPECT_EQ(Match(*table, {.path = "/case/x"}), "insensitive");
}

TEST(RouteTableTest, NoVirtualHostOrRouteMatchesNothing) {
  auto table = Table(R"(
clusters: [{name: a, endpoints: [127.0.0.1:1]}]
virtual_hosts:
  - {name: h, domains: [only.example.com], routes: [{match: {prefix: /a/}, cluster: a}]}
)");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Match(*table, {.host = "other.example.com", .path = "/a/"}), "");
  const Route* none = nullptr;
  auto lookup = [](std::string_view) -> std::optional<std::string_view> { return std::nullopt; };
  EXPECT_EQ(table->Match(RequestView{"only.example.com", "GET", "/b", "", lookup}), none);
}

TEST(RouteTableTest, WeightedSplitFollowsTheWeightsAndIsStableForADraw) {
  auto table = Table(R"(
clusters:
  - {name: a, endpoints: [127.0.0.1:1]}
  - {name: b, endpoints: [127.0.0.1:2]}
  - {name: c, endpoints: [127.0.0.1:3]}
virtual_hosts:
  - name: h
    routes:
      - split: [{cluster: a, weight: 70}, {cluster: b, weight: 0}, {cluster: c, weight: 30}]
)");
  ASSERT_NE(table, nullptr);
  auto lookup = [](std::string_view) -> std::optional<std::string_view> { return std::nullopt; };
  const Route* route = table->Match(RequestView{"x", "GET", "/", "", lookup});
  ASSERT_NE(route, nullptr);
  std::map<std::string, int> counts;
  for (uint64_t draw = 0; draw < 1000; ++draw) ++counts[route->PickCluster(draw)];
  // Draws cover the range evenly, so the counts are the weights exactly.
  EXPECT_EQ(counts["a"], 700);
  EXPECT_EQ(counts["b"], 0);
  EXPECT_EQ(counts["c"], 300);
  EXPECT_EQ(route->PickCluster(12345), route->PickCluster(12345));
}

TEST(RouteTableTest, PrefixRewriteReplacesTheMatchedPrefix) {
  auto table = Table(R"(
clusters: [{name: a, endpoints: [127.0.0.1:1]}]
virtual_hosts:
  - name: h
    routes:
      - {match: {prefix: /api/}, prefix_rewrite: /, cluster: a}
      - {match: {prefix: /old}, prefix_rewrite: /new, cluster: a}
)");
  ASSERT_NE(table, nullptr);
  auto lookup = [](std::string_view) -> std::optional<std::string_view> { return std::nullopt; };
  const Route* api = table->Match(RequestView{"x", "GET", "/api/v1/x", "", lookup});
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->RewritePath("/api/v1/x"), "/v1/x");
  const Route* old = table->Match(RequestView{"x", "GET", "/old/page", "", lookup});
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->RewritePath("/old/page"), "/new/page");
}

TEST(RouteTableTest, ADomainClaimedTwiceIsRefused) {
  auto config = ParseGatewayConfig(R"(
clusters: [{name: a, endpoints: [127.0.0.1:1]}]
virtual_hosts:
  - {name: one, domains: [x.com], routes: [{cluster: a}]}
  - {name: two, domains: [X.com], routes: [{cluster: a}]}
)",
                                   "t.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto table = RouteTable::Build(config->virtual_hosts);
  ASSERT_FALSE(table.ok());
  EXPECT_NE(table.status().message().find("'x.com' is claimed by virtual hosts 'one' and 'two'"),
            std::string::npos)
      << table.status();
}

TEST(QueryParameterTest, FindsDecodedValues) {
  EXPECT_EQ(FindQueryParameter("a=1&b=x%20y+z", "b"), "x y z");
  EXPECT_EQ(FindQueryParameter("a=1&flag", "flag"), "");
  EXPECT_EQ(FindQueryParameter("a=1", "b"), std::nullopt);
  EXPECT_EQ(FindQueryParameter("a%62=1", "ab"), "1");
  EXPECT_EQ(FindQueryParameter("x=%", "x"), "%");  // a lone '%' stays
}

}  // namespace
}  // namespace capstan::gateway
