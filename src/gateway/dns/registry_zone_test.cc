#include "gateway/dns/registry_zone.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "gateway/dns/answer.h"

namespace capstan::gateway::dns {
namespace {

using ::testing::ElementsAre;

std::string Wire(std::string_view text) { return NameFromText(text, std::string(1, '\0')).value(); }

std::vector<std::string> Ask(const ZoneSet& zones, std::string_view name, uint16_t type,
                             uint8_t* rcode = nullptr) {
  static uint8_t out[kMaxMessage];
  AnswerResult r = Answer(zones, BuildQuery(Wire(name), type, 1), Transport::kTcp, {}, out);
  auto m = ParseMessage(std::string_view(reinterpret_cast<char*>(out), r.size));
  EXPECT_TRUE(m.ok());
  if (rcode != nullptr) *rcode = m->rcode();
  std::vector<std::string> texts;
  for (const auto& rr : m->answers) {
    texts.push_back(NameToText(rr.name) + " " + std::to_string(rr.ttl) + " " + TypeName(rr.type) +
                    " " + RdataToText(rr.type, rr.rdata));
  }
  std::sort(texts.begin(), texts.end());
  return texts;
}

TEST(DnsRegistryZone, RecordsFromInstances) {
  std::map<std::string, std::string> keys = {
      {"services/echo/10.0.0.7:7000",
       R"({"Addr":"10.0.0.7:7000","Metadata":{"weight":2,"zone":"eu"}})"},
      {"services/echo/b", R"({"Addr":"[2001:db8::1]:7001","Metadata":{"port_name":"grpc"}})"},
      {"services/Web/w1", "web.example.net:80"},
      {"services/bad name/x", "10.0.0.9:1"},
      {"services/broken/x", "{not json"},
      {"other/echo/x", "10.9.9.9:1"},
  };
  auto zone = BuildRegistryZone({}, keys, 42);
  ASSERT_TRUE(zone.ok()) << zone.status();
  ZoneSet zones;
  zones.Add(std::shared_ptr<const Zone>(std::move(zone).value()));
  EXPECT_THAT(Ask(zones, "echo.svc.capstan.", kTypeA),
              ElementsAre("echo.svc.capstan. 5 A 10.0.0.7"));
  EXPECT_THAT(Ask(zones, "ECHO.svc.capstan.", kTypeAAAA),
              ElementsAre("ECHO.svc.capstan. 5 AAAA 2001:db8::1"));
  EXPECT_THAT(Ask(zones, "echo.svc.capstan.", kTypeSRV),
              ElementsAre("echo.svc.capstan. 5 SRV 0 1 7001 b.echo.svc.capstan.",
                          "echo.svc.capstan. 5 SRV 0 2 7000 10-0-0-7-7000.echo.svc.capstan."));
  EXPECT_THAT(Ask(zones, "_port._tcp.echo.svc.capstan.", kTypeSRV),
              ElementsAre("_port._tcp.echo.svc.capstan. 5 SRV 0 2 7000 "
                          "10-0-0-7-7000.echo.svc.capstan."));
  EXPECT_THAT(Ask(zones, "_grpc._tcp.echo.svc.capstan.", kTypeSRV),
              ElementsAre("_grpc._tcp.echo.svc.capstan. 5 SRV 0 1 7001 b.echo.svc.capstan."));
  EXPECT_THAT(Ask(zones, "10-0-0-7-7000.echo.svc.capstan.", kTypeTXT),
              ElementsAre("10-0-0-7-7000.echo.svc.capstan. 5 TXT \"instance=10.0.0.7:7000\" "
                          "\"addr=10.0.0.7:7000\" \"weight=2\" \"zone=eu\""));
  // A host name: no address record, the SRV target is the name.
  EXPECT_THAT(Ask(zones, "web.svc.capstan.", kTypeSRV),
              ElementsAre("web.svc.capstan. 5 SRV 0 1 80 web.example.net."));
  uint8_t rcode = 0;
  EXPECT_TRUE(Ask(zones, "web.svc.capstan.", kTypeA, &rcode).empty());
  EXPECT_EQ(rcode, kRcodeNoError);
  EXPECT_TRUE(Ask(zones, "broken.svc.capstan.", kTypeA, &rcode).empty());
  EXPECT_EQ(rcode, kRcodeNxDomain);
  EXPECT_THAT(Ask(zones, "svc.capstan.", kTypeSOA),
              ElementsAre("svc.capstan. 5 SOA ns.svc.capstan. hostmaster.svc.capstan. 42 60 30 "
                          "3600 5"));
}

TEST(DnsRegistryZone, EmptyRegistryIsAnEmptyZone) {
  auto zone = BuildRegistryZone({.zone = "disc.example.", .prefix = "svc/", .ttl = 1}, {}, 1);
  ASSERT_TRUE(zone.ok()) << zone.status();
  ZoneSet zones;
  zones.Add(std::shared_ptr<const Zone>(std::move(zone).value()));
  uint8_t rcode = 0;
  Ask(zones, "x.disc.example.", kTypeA, &rcode);
  EXPECT_EQ(rcode, kRcodeNxDomain);
}

}  // namespace
}  // namespace capstan::gateway::dns
