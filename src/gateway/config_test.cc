#include "gateway/config.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace capstan::gateway {
namespace {

constexpr std::string_view kFull = R"(
listeners:
  - name: public
    address: 127.0.0.1:8080
    limits: {max_request_line: 4KiB, max_body: 1MiB, idle_timeout: 30s}
virtual_hosts:
  - name: api
    domains: [api.example.com, "*.api.example.com"]
    routes:
      - name: v1
        match: {prefix: /v1/, methods: [GET, HEAD]}
        cluster: api
        timeout: 2s
        retry: {on: [connect-failure, gateway-error], attempts: 3}
        request_headers:
          set: [{name: X-Env, value: prod}]
          remove: [X-Debug]
      - name: canary
        split: [{cluster: api, weight: 9}, {cluster: api-next, weight: 1}]
        split_hash_header: X-User
clusters:
  - name: api
    endpoints: [127.0.0.1:9000, 127.0.0.1:9001]
    balancer: p2c
    health_check: {path: /healthz, interval: 1s}
    limits: {max_requests: 100}
  - name: api-next
    discovery: store://127.0.0.1:2379/services/api-next
    protocol: h2
admin: 127.0.0.1:9901
access_log: {path: "-"}
)";

TEST(GatewayConfigTest, AFullFileParsesWithDefaultsForWhatIsNotGiven) {
  auto config = ParseGatewayConfig(kFull, "gateway.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->listeners.size(), 1u);
  const ListenerConfig& l = config->listeners[0];
  EXPECT_EQ(l.address, "127.0.0.1:8080");
  EXPECT_EQ(l.limits.max_request_line_bytes, 4096u);
  EXPECT_EQ(l.limits.max_body_bytes, 1u << 20);
  EXPECT_EQ(l.limits.idle_timeout, Duration(30000));
  EXPECT_EQ(l.limits.max_header_bytes, 64u << 10);  // default
  EXPECT_EQ(l.protocols, (std::vector<std::string>{"http1", "h2c"}));
  ASSERT_EQ(config->virtual_hosts.size(), 1u);
  const RouteConfig& v1 = config->virtual_hosts[0].routes[0];
  EXPECT_EQ(v1.match.prefix, "/v1/");
  EXPECT_EQ(v1.timeout, Duration(2000));
  EXPECT_EQ(v1.retry.max_attempts, 3);
  ASSERT_EQ(v1.request_headers.set.size(), 1u);
  EXPECT_EQ(v1.request_headers.set[0].first, "x-env");  // names lowercased
  EXPECT_EQ(v1.request_headers.remove, std::vector<std::string>{"x-debug"});
  const RouteConfig& canary = config->virtual_hosts[0].routes[1];
  EXPECT_EQ(canary.match.prefix, "/");  // no match: every path
  EXPECT_EQ(canary.split.size(), 2u);
  EXPECT_EQ(canary.split_hash_header, "x-user");
  ASSERT_EQ(config->clusters.size(), 2u);
  EXPECT_EQ(config->clusters[0].balancer, "p2c");
  ASSERT_TRUE(config->clusters[0].health_check.has_value());
  EXPECT_EQ(config->clusters[0].health_check->path, "/healthz");
  EXPECT_EQ(config->clusters[0].health_check->unhealthy_threshold, 3);
  EXPECT_EQ(config->clusters[0].limits.max_requests, 100u);
  EXPECT_EQ(config->clusters[1].protocol, "h2");
  EXPECT_EQ(config->admin_address, "127.0.0.1:9901");
}

// The error for `yaml`, which must not parse.
std::string ErrorOf(std::string_view yaml) {
  auto config = ParseGatewayConfig(yaml, "g.yaml");
  EXPECT_FALSE(config.ok());
  return config.ok() ? "" : std::string(config.status().message());
}

TEST(GatewayConfigTest, ErrorsNameTheFileLineAndField) {
  EXPECT_EQ(ErrorOf("clusters:\n  - name: a\n    endpoints: [x:1]\n    balancr: p2c\n"),
            "g.yaml:4: clusters[0].balancr: unknown option");
  EXPECT_EQ(ErrorOf("virtual_hosts:\n  - name: h\n    routes:\n      - match: {prefix: api}\n"
                    "        direct_response: {status: 200}\n"),
            "g.yaml:4: virtual_hosts[0].routes[0].match.prefix: must start with '/'");
  EXPECT_EQ(ErrorOf("clusters:\n  - name: a\n    endpoints: [x:1]\n    connect_timeout: soon\n"),
            "g.yaml:4: clusters[0].connect_timeout: must be a duration like 500ms, 10s, 5m");
  EXPECT_EQ(ErrorOf("listeners: [{address: 'x:1', limits: {max_body: lots}}]\n"),
            "g.yaml:1: listeners[0].limits.max_body: must be a size like 512, 64KiB, 16MiB");
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{match: {regex: '('}, cluster: a}]}]\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n")
                .find("not a valid RE2 expression"),
            std::string::npos);
  EXPECT_NE(ErrorOf("a: [\n").find("g.yaml:"), std::string::npos);
}

TEST(GatewayConfigTest, RoutesTakeExactlyOneActionAndNameDefinedClusters) {
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{cluster: a, direct_response: {}}]}]\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n")
                .find("exactly one of cluster, split, experiment, redirect and direct_response"),
            std::string::npos);
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{}]}]\n").find("exactly one of"),
            std::string::npos);
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{cluster: missing}]}]\n")
                .find("names cluster 'missing', which is not defined"),
            std::string::npos);
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{split: [{cluster: a, weight: 0}]}]}]\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n")
                .find("weights must not all be 0"),
            std::string::npos);
  // With live configuration, clusters may come from the store later.
  EXPECT_TRUE(ParseGatewayConfig("store: store://127.0.0.1:2379\n"
                                 "virtual_hosts: [{name: h, routes: [{cluster: later}]}]\n",
                                 "g.yaml")
                  .ok());
}

TEST(GatewayConfigTest, AnExperimentRouteNamesItsVariantsClustersAndItsUnit) {
  absl::StatusOr<GatewayConfig> c = ParseGatewayConfig(R"(
experiments:
  store: store://127.0.0.1:2379
  events: http://127.0.0.1:8090/v1/events
  batch_events: 100
  flush_interval: 250ms
virtual_hosts:
  - name: shop
    routes:
      - experiment:
          id: checkout
          unit_header: X-User-Id
          variants: {control: v1, treatment: v2}
          default: v1
          attribute_headers: {country: X-Country}
clusters:
  - {name: v1, endpoints: ["127.0.0.1:1"]}
  - {name: v2, endpoints: ["127.0.0.1:2"]}
)",
                                                       "g.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const ExperimentRoute& e = *c->virtual_hosts[0].routes[0].experiment;
  EXPECT_EQ(e.experiment, "checkout");
  EXPECT_EQ(e.unit_header, "x-user-id");
  EXPECT_EQ(e.unit_cookie, "capstan_uid");
  EXPECT_EQ(e.variants, (std::vector<std::pair<std::string, std::string>>{{"control", "v1"},
                                                                          {"treatment", "v2"}}));
  EXPECT_EQ(e.default_cluster, "v1");
  EXPECT_EQ(e.attribute_headers[0], (std::pair<std::string, std::string>{"country", "x-country"}));
  EXPECT_EQ(c->experiments->batch_events, 100u);
  EXPECT_TRUE(c->clusters[0].circuit_breaker);
  auto no_breaker = ParseGatewayConfig(
      "clusters: [{name: a, endpoints: ['x:1'], circuit_breaker: false}]\n", "g.yaml");
  ASSERT_TRUE(no_breaker.ok()) << no_breaker.status();
  EXPECT_FALSE(no_breaker->clusters[0].circuit_breaker);
  EXPECT_EQ(c->experiments->flush_interval.count(), 250);

  const std::string clusters = "clusters: [{name: v1, endpoints: ['x:1']}]\n";
  const std::string section = "experiments: {store: 'store://127.0.0.1:1'}\n";
  EXPECT_EQ(ErrorOf(section +
                    "virtual_hosts: [{name: h, routes: [{experiment: {id: e, "
                    "variants: {a: v1}}}]}]\n" +
                    clusters),
            "g.yaml:2: virtual_hosts[0].routes[0].experiment.default: is required");
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{experiment: {id: e, variants: {a: v1}, "
                    "default: v1}}]}]\n" +
                    clusters)
                .find("needs the top-level experiments section"),
            std::string::npos);
  EXPECT_NE(ErrorOf(section +
                    "virtual_hosts: [{name: h, routes: [{experiment: {id: e, "
                    "variants: {a: nowhere}, default: v1}}]}]\n" +
                    clusters)
                .find("names cluster 'nowhere', which is not defined"),
            std::string::npos);
  EXPECT_NE(ErrorOf(section +
                    "virtual_hosts: [{name: h, routes: [{cluster: v1, experiment: "
                    "{id: e, variants: {a: v1}, default: v1}}]}]\n" +
                    clusters)
                .find("exactly one of"),
            std::string::npos);
  EXPECT_NE(ErrorOf(section +
                    "virtual_hosts: [{name: h, routes: [{experiment: {id: e, "
                    "variants: {a: v1}, default: v1, unit_cookie: 'a b'}}]}]\n" +
                    clusters)
                .find("unit_cookie: letters, digits"),
            std::string::npos);
  EXPECT_NE(ErrorOf("experiments: {events: 'https://x/v1/events'}\n").find("must be http://"),
            std::string::npos);
}

TEST(GatewayConfigTest, HeaderEditsRefuseValuesThatWouldSplitAHeader) {
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{direct_response: {}, request_headers: "
                    "{set: [{name: x, value: \"a\\r\\nInjected: 1\"}]}}]}]\n")
                .find("must not contain CR, LF or NUL"),
            std::string::npos);
  EXPECT_NE(ErrorOf("virtual_hosts: [{name: h, routes: [{direct_response: {}, request_headers: "
                    "{set: [{name: 'bad name', value: x}]}}]}]\n")
                .find("not a valid header name"),
            std::string::npos);
}

TEST(GatewayConfigTest, DuplicateNamesAreRefused) {
  EXPECT_NE(ErrorOf("clusters: [{name: a, endpoints: [x:1]}, {name: a, endpoints: [x:2]}]\n")
                .find("cluster 'a' is defined twice"),
            std::string::npos);
}

TEST(GatewayConfigTest, StoreDocumentsParseAlone) {
  auto vh = ParseVirtualHostDocument(
      R"({"name": "shop", "domains": ["shop.example.com"],
          "routes": [{"match": {"prefix": "/"}, "cluster": "shop"}]})",
      "/capstan/gateway/routes/shop");
  ASSERT_TRUE(vh.ok()) << vh.status();
  EXPECT_EQ(vh->routes[0].cluster, "shop");
  auto cluster = ParseClusterDocument(R"({"name": "shop", "endpoints": ["127.0.0.1:9000"]})",
                                      "/capstan/gateway/clusters/shop");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto bad = ParseClusterDocument(R"({"name": "shop"})", "/capstan/gateway/clusters/shop");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("/capstan/gateway/clusters/shop:1"), std::string::npos)
      << bad.status();
}

TEST(GatewayConfigTest, TcpListenersParseWithDefaultsAndMaglevForTheirClusters) {
  auto config = ParseGatewayConfig(
      "tcp_listeners:\n"
      "  - {name: db, address: 127.0.0.1:5432, cluster: pg, proxy_protocol: v2,\n"
      "     connect_timeout: 250ms, idle_timeout: 10m, max_connections: 5, buffer: 64KiB}\n"
      "  - {address: 127.0.0.1:6379, cluster: both}\n"
      "virtual_hosts: [{name: h, routes: [{cluster: both}]}]\n"
      "clusters:\n"
      "  - {name: pg, endpoints: [127.0.0.1:15432], health_check: {type: tcp}}\n"
      "  - {name: both, endpoints: [127.0.0.1:16379]}\n",
      "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->tcp_listeners.size(), 2u);
  const TcpListenerConfig& db = config->tcp_listeners[0];
  EXPECT_EQ(db.proxy_protocol, "v2");
  EXPECT_EQ(db.connect_timeout, Duration(250));
  EXPECT_EQ(db.idle_timeout, Duration(600000));
  EXPECT_EQ(db.max_connections, 5u);
  EXPECT_EQ(db.buffer_bytes, 64u << 10);
  const TcpListenerConfig& cache = config->tcp_listeners[1];
  EXPECT_EQ(cache.name, "127.0.0.1:6379");
  EXPECT_EQ(cache.proxy_protocol, "none");
  EXPECT_FALSE(cache.connect_timeout.has_value());
  EXPECT_EQ(cache.connect_attempts, 3);
  // Used by tcp listeners only: maglev; also by a route: round_robin.
  EXPECT_EQ(config->clusters[0].balancer, "maglev");
  EXPECT_EQ(config->clusters[0].health_check->type, "tcp");
  EXPECT_EQ(config->clusters[1].balancer, "round_robin");
}

TEST(GatewayConfigTest, SpliceComesFromTheListenerElseTheCluster) {
  auto config = ParseGatewayConfig(
      "tcp_listeners:\n"
      "  - {name: own, address: 127.0.0.1:1, cluster: big, splice: off, splice_pipe: 256KiB,"
      " splice_after: 1MiB}\n"
      "  - {name: inherits, address: 127.0.0.1:2, cluster: big}\n"
      "  - {name: default, address: 127.0.0.1:3, cluster: plain}\n"
      "clusters:\n"
      "  - {name: big, endpoints: [127.0.0.1:10], splice: on}\n"
      "  - {name: plain, endpoints: [127.0.0.1:11]}\n",
      "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tcp_listeners[0].splice, "off");
  EXPECT_EQ(config->tcp_listeners[0].splice_pipe_bytes, 256u << 10);
  EXPECT_FALSE(config->tcp_listeners[1].splice.has_value());
  EXPECT_EQ(config->tcp_listeners[1].splice_pipe_bytes, 64u << 10);
  EXPECT_EQ(config->tcp_listeners[0].splice_after_bytes, 1u << 20);
  EXPECT_EQ(config->tcp_listeners[1].splice_after_bytes, 64u << 10);
  EXPECT_EQ(config->clusters[0].splice, "on");
  EXPECT_EQ(config->clusters[1].splice, "auto");
  // A cluster from the store carries it too.
  auto stored = ParseClusterDocument(
      R"({"name": "shop", "endpoints": ["127.0.0.1:9000"], "splice": "off"})", "k");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->splice, "off");
  auto bad = ParseClusterDocument(
      R"({"name": "shop", "endpoints": ["127.0.0.1:9000"], "splice": "yes"})", "k");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("splice: must be auto, on or off"),
            std::string::npos)
      << bad.status();
}

TEST(GatewayConfigTest, TcpListenerErrorsNameTheField) {
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1, cluster: a, proxy_protocol: v3}\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n"),
            "g.yaml:2: tcp_listeners[0].proxy_protocol: must be none, v1 or v2");
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1}\n"),
            "g.yaml:2: tcp_listeners[0].cluster: is required");
  EXPECT_NE(ErrorOf("tcp_listeners: [{name: t, address: 127.0.0.1:1, cluster: missing}]\n")
                .find("tcp listener 't' names cluster 'missing', which is not defined"),
            std::string::npos);
  EXPECT_NE(ErrorOf("listeners: [{address: 127.0.0.1:1}]\n"
                    "tcp_listeners: [{address: 127.0.0.1:1, cluster: a}]\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n")
                .find("two listeners on 127.0.0.1:1"),
            std::string::npos);
  EXPECT_EQ(ErrorOf("clusters: [{name: a, endpoints: [x:1], health_check: {type: udp}}]\n"),
            "g.yaml:1: clusters[0].health_check.type: must be http or tcp");
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1, cluster: a, splice: always}\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n"),
            "g.yaml:2: tcp_listeners[0].splice: must be auto, on or off");
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1, cluster: a, splice_pipe: 2MiB}\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n"),
            "g.yaml:2: tcp_listeners[0].splice_pipe: must be from 4KiB to 1MiB "
            "(fs.pipe-max-size's default)");
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1, cluster: a, splice_after: 2GiB}\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n"),
            "g.yaml:2: tcp_listeners[0].splice_after: must be at most 1GiB");
  EXPECT_EQ(ErrorOf("tcp_listeners:\n  - {address: 127.0.0.1:1, cluster: a, splice_after: lots}\n"
                    "clusters: [{name: a, endpoints: [x:1]}]\n"),
            "g.yaml:2: tcp_listeners[0].splice_after: must be a size like 512, 64KiB, 16MiB");
  EXPECT_EQ(ErrorOf("clusters: [{name: a, endpoints: [x:1], splice: maybe}]\n"),
            "g.yaml:1: clusters[0].splice: must be auto, on or off");
}

TEST(GatewayConfigTest, ClusterClientCertificateForUpstreamMutualTls) {
  // Files that exist (their content is the TLS context's business).
  std::string cert = ::testing::TempDir() + "/gw_config_client.pem";
  std::string key = ::testing::TempDir() + "/gw_config_client.key";
  std::ofstream(cert) << "cert";
  std::ofstream(key) << "key";
  auto config = ParseGatewayConfig(
      absl::StrCat("clusters:\n  - name: a\n    endpoints: [x:1]\n    tls: true\n"
                   "    tls_cert_file: ",
                   cert, "\n    tls_key_file: ", key, "\n"),
      "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->clusters[0].tls_cert_file, cert);
  EXPECT_EQ(config->clusters[0].tls_key_file, key);
  // Defaults: no client certificate.
  auto plain = ParseGatewayConfig("clusters: [{name: a, endpoints: [x:1], tls: true}]\n", "g.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->clusters[0].tls_cert_file, "");
  EXPECT_EQ(plain->clusters[0].tls_key_file, "");
  // Each mistake names its field and line.
  EXPECT_EQ(ErrorOf(absl::StrCat("clusters:\n  - name: a\n    endpoints: [x:1]\n    tls: true\n"
                                 "    tls_cert_file: ",
                                 cert, "\n")),
            "g.yaml:2: clusters[0].tls_key_file: tls_cert_file needs tls_key_file (the "
            "certificate's private key)");
  EXPECT_EQ(ErrorOf(absl::StrCat("clusters:\n  - name: a\n    endpoints: [x:1]\n    tls: true\n"
                                 "    tls_key_file: ",
                                 key, "\n")),
            "g.yaml:2: clusters[0].tls_cert_file: tls_key_file needs tls_cert_file (the client "
            "certificate it belongs to)");
  EXPECT_EQ(ErrorOf(absl::StrCat("clusters:\n  - name: a\n    endpoints: [x:1]\n"
                                 "    tls_cert_file: ",
                                 cert, "\n    tls_key_file: ", key, "\n")),
            "g.yaml:4: clusters[0].tls_cert_file: a client certificate needs tls: true");
  EXPECT_EQ(ErrorOf("clusters:\n  - name: a\n    endpoints: [x:1]\n    tls: true\n"
                    "    tls_cert_file: /nonexistent/c.pem\n    tls_key_file: " +
                    key + "\n"),
            "g.yaml:5: clusters[0].tls_cert_file: cannot read /nonexistent/c.pem");
  std::remove(cert.c_str());
  std::remove(key.c_str());
}

TEST(ByteSizeTest, UnitsAndOverflow) {
  EXPECT_EQ(ParseByteSize("512").value(), 512u);
  EXPECT_EQ(ParseByteSize("64KiB").value(), 64u << 10);
  EXPECT_EQ(ParseByteSize("16MiB").value(), 16u << 20);
  EXPECT_EQ(ParseByteSize("2GB").value(), 2000000000u);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("KiB").ok());
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999GiB").ok());
}

}  // namespace
}  // namespace capstan::gateway
