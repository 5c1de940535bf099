// The gateway configuration's `dns:` section (gateway/config.h).
#include <gtest/gtest.h>

#include "gateway/config.h"

namespace capstan::gateway {
namespace {

TEST(DnsConfig, ParsesEveryOptionWithDefaults) {
  auto config = ParseGatewayConfig(R"(
dns:
  listen: 127.0.0.1:5353
  zones: [a.zone, b.zone]
  registry: store://127.0.0.1:2379/services
  registry_ttl: 2s
  rate_limit: 100
)",
                                   "gw.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->dns.has_value());
  const DnsConfig& d = *config->dns;
  EXPECT_EQ(d.listen, "127.0.0.1:5353");
  EXPECT_EQ(d.zones, (std::vector<std::string>{"a.zone", "b.zone"}));
  EXPECT_EQ(d.registry, "store://127.0.0.1:2379/services");
  EXPECT_EQ(d.registry_zone, "svc.capstan.");
  EXPECT_EQ(d.registry_ttl, std::chrono::seconds(2));
  EXPECT_EQ(d.rate_limit, 100);
  EXPECT_EQ(d.rate_limit_slip, 2);
  EXPECT_EQ(d.max_udp_payload, 1232);
  EXPECT_EQ(d.udp_answer_slice, 64);
  EXPECT_FALSE(d.udp_latency_metrics);
  auto tuned = ParseGatewayConfig(
      "dns:\n  listen: 127.0.0.1:53\n  zones: [a]\n  udp_answer_slice: 4\n"
      "  udp_latency_metrics: true\n",
      "gw.yaml");
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  EXPECT_EQ(tuned->dns->udp_answer_slice, 4);
  EXPECT_TRUE(tuned->dns->udp_latency_metrics);
  auto none = ParseGatewayConfig("admin: 127.0.0.1:9901\n", "gw.yaml");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->dns.has_value());
}

void ExpectError(std::string_view yaml, std::string_view fragment) {
  auto config = ParseGatewayConfig(yaml, "gw.yaml");
  ASSERT_FALSE(config.ok()) << yaml;
  std::string message(config.status().message());
  EXPECT_NE(message.find(fragment), std::string::npos) << message << " lacks " << fragment;
}

TEST(DnsConfig, RefusesWhatIsInvalid) {
  ExpectError("dns:\n  zones: [a.zone]\n", "gw.yaml:2: dns.listen: is required");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n", "dns.zones: give zone files, a registry, or both");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n  registry: http://x\n",
              "dns.registry: must be store://");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n  zones: [a]\n  max_udp_payload: 100\n",
              "dns.max_udp_payload");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n  zones: [a]\n  udp_answer_slice: 0\n",
              "dns.udp_answer_slice");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n  zones: [a]\n  udp_answer_slice: 65\n",
              "dns.udp_answer_slice");
  ExpectError("dns:\n  listen: 127.0.0.1:53\n  zones: [a]\n  colour: blue\n", "colour");
}

}  // namespace
}  // namespace capstan::gateway
