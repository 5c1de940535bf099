// The `cache:` sections of the gateway's YAML (config.cc reads them).
#include "gateway/config.h"
#include "gtest/gtest.h"

namespace capstan::gateway {
namespace {

constexpr std::string_view kBase = R"(
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: app, endpoints: ["127.0.0.1:9"]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {match: {prefix: /static/}, cluster: app, cache: {enabled: true}}
      - {match: {prefix: /}, cluster: app}
)";

TEST(CacheConfig, SectionsParse) {
  std::string text = std::string(kBase) + R"(
cache:
  memory: 64MiB
  max_object_size: 1MiB
  headers: {status: X-Cache-Status, age: false, tags: [Surrogate-Key, xkey]}
  purge: {enabled: false}
  heuristic_max: 1h
)";
  auto c = ParseGatewayConfig(text, "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->cache);
  EXPECT_EQ(c->cache->memory, size_t{64} << 20);
  EXPECT_EQ(c->cache->max_object_size, size_t{1} << 20);
  EXPECT_EQ(c->cache->status_header, "x-cache-status");
  EXPECT_FALSE(c->cache->age_header);
  EXPECT_EQ(c->cache->tag_headers, (std::vector<std::string>{"surrogate-key", "xkey"}));
  EXPECT_FALSE(c->cache->purge);
  EXPECT_EQ(c->cache->heuristic_max, Duration(3600000));
  EXPECT_TRUE(c->virtual_hosts[0].routes[0].cache.enabled);
  EXPECT_FALSE(c->virtual_hosts[0].routes[1].cache.enabled);
}

TEST(CacheConfig, Defaults) {
  auto c = ParseGatewayConfig(std::string(kBase) + "cache: {}\n", "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cache->memory, size_t{256} << 20);
  EXPECT_EQ(c->cache->max_object_size, size_t{8} << 20);
  EXPECT_EQ(c->cache->status_header, "x-cache");
  EXPECT_TRUE(c->cache->age_header);
  EXPECT_TRUE(c->cache->purge);
}

TEST(CacheConfig, RouteWithoutSectionIsRefused) {
  auto c = ParseGatewayConfig(kBase, "test.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("no top-level cache: section"), std::string_view::npos)
      << c.status();
}

TEST(CacheConfig, ErrorsNameTheField) {
  auto small = ParseGatewayConfig(std::string(kBase) + "cache: {memory: 1KiB}\n", "test.yaml");
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("cache.memory"), std::string_view::npos)
      << small.status();
  auto typo = ParseGatewayConfig(std::string(kBase) + "cache: {memroy: 1MiB}\n", "test.yaml");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("memroy"), std::string_view::npos) << typo.status();
  auto big = ParseGatewayConfig(
      std::string(kBase) + "cache: {memory: 2MiB, max_object_size: 4MiB}\n", "test.yaml");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("max_object_size"), std::string_view::npos) << big.status();
}

TEST(CacheConfig, DiskTierAndTargetedFields) {
  auto c = ParseGatewayConfig(std::string(kBase) + R"(
cache:
  disk: {path: /var/cache/capstan, size: 2GiB}
  targeted_fields: [Capstan-Cache-Control, CDN-Cache-Control]
  strip_targeted_fields: true
)",
                              "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cache->disk_path, "/var/cache/capstan");
  EXPECT_EQ(c->cache->disk_size, size_t{2} << 30);
  EXPECT_EQ(c->cache->targeted_fields,
            (std::vector<std::string>{"capstan-cache-control", "cdn-cache-control"}));
  EXPECT_TRUE(c->cache->strip_targeted_fields);
  auto defaults = ParseGatewayConfig(std::string(kBase) + "cache: {}\n", "test.yaml");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_TRUE(defaults->cache->disk_path.empty());
  EXPECT_EQ(defaults->cache->targeted_fields, (std::vector<std::string>{"cdn-cache-control"}));
  EXPECT_FALSE(defaults->cache->strip_targeted_fields);
  auto no_path =
      ParseGatewayConfig(std::string(kBase) + "cache: {disk: {size: 1GiB}}\n", "test.yaml");
  ASSERT_FALSE(no_path.ok());
  EXPECT_NE(no_path.status().message().find("cache.disk.path"), std::string_view::npos)
      << no_path.status();
  auto small = ParseGatewayConfig(std::string(kBase) + "cache: {disk: {path: /x, size: 1KiB}}\n",
                                  "test.yaml");
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("cache.disk.size"), std::string_view::npos)
      << small.status();
}

}  // namespace
}  // namespace capstan::gateway
