#include "gateway/dns/zone.h"

#include <gtest/gtest.h>

#include "gateway/dns/message.h"

namespace capstan::gateway::dns {
namespace {

std::string Wire(std::string_view text) { return NameFromText(text, std::string(1, '\0')).value(); }

constexpr std::string_view kZone = R"(; a test zone
$ORIGIN example.com.
$TTL 1h
@   IN  SOA ns1 hostmaster (
            2024010101 ; serial
            7200 3600 1209600
            300 )     ; minimum
    IN  NS  ns1
    IN  NS  ns2.example.net.
    IN  MX  10 mail
ns1     A   192.0.2.1
mail 600 IN A 192.0.2.2
        IN AAAA 2001:db8::2
www  CNAME  @
txt  TXT "hello world" plain "semi;colon" "q\"uote"
_http._tcp  SRV 0 5 80 www
*.wild  A 192.0.2.9
a.b.c   A 192.0.2.10
generic TYPE65280 \# 3 010203
Upper   IN 30s A 192.0.2.11
)";

TEST(DnsZone, ParsesTheMasterFile) {
  auto zone = ParseZone(kZone, "", "test.zone");
  ASSERT_TRUE(zone.ok()) << zone.status();
  EXPECT_EQ(NameToText((*zone)->origin()), "example.com.");
  EXPECT_EQ((*zone)->negative_ttl(), 300u);
  const ZoneNode* apex = (*zone)->Find(Wire("example.com."));
  ASSERT_NE(apex, nullptr);
  ASSERT_NE(apex->Find(kTypeNS), nullptr);
  EXPECT_EQ(apex->Find(kTypeNS)->rdatas.size(), 2u);
  EXPECT_EQ(apex->Find(kTypeNS)->ttl, 3600u);
  EXPECT_EQ(RdataToText(kTypeSOA, apex->Find(kTypeSOA)->rdatas[0]),
            "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300");
  const ZoneNode* mail = (*zone)->Find(Wire("mail.example.com."));
  ASSERT_NE(mail, nullptr);
  EXPECT_EQ(mail->Find(kTypeA)->ttl, 600u);
  // An empty owner continues the previous one; the TTL is $TTL's.
  EXPECT_EQ(RdataToText(kTypeAAAA, mail->Find(kTypeAAAA)->rdatas[0]), "2001:db8::2");
  EXPECT_EQ(mail->Find(kTypeAAAA)->ttl, 3600u);
  const ZoneNode* txt = (*zone)->Find(Wire("txt.example.com."));
  ASSERT_NE(txt, nullptr);
  EXPECT_EQ(RdataToText(kTypeTXT, txt->Find(kTypeTXT)->rdatas[0]),
            R"("hello world" "plain" "semi;colon" "q\"uote")");
  EXPECT_NE((*zone)->Find(Wire("_http._tcp.example.com.")), nullptr);
  // Empty non-terminals exist as nodes without records.
  const ZoneNode* c = (*zone)->Find(Wire("c.example.com."));
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->rrsets.empty());
  EXPECT_NE((*zone)->Find(Wire("*.wild.example.com.")), nullptr);
  const ZoneNode* generic = (*zone)->Find(Wire("generic.example.com."));
  ASSERT_NE(generic, nullptr);
  EXPECT_EQ(generic->Find(65280)->rdatas[0], "\1\2\3");
  // Stored under the lower-cased name, the written case kept.
  const ZoneNode* upper = (*zone)->Find(Wire("upper.example.com."));
  ASSERT_NE(upper, nullptr);
  EXPECT_EQ(upper->owner, Wire("Upper.example.com."));
  EXPECT_EQ(upper->Find(kTypeA)->ttl, 30u);
}

void ExpectError(std::string_view text, std::string_view fragment) {
  auto zone = ParseZone(text, "example.com.", "bad.zone");
  ASSERT_FALSE(zone.ok()) << text;
  EXPECT_NE(std::string(zone.status().message()).find(fragment), std::string::npos)
      << zone.status().message() << " lacks " << fragment;
}

TEST(DnsZone, ErrorsNameFileAndLine) {
  constexpr std::string_view kSoa = "@ 3600 SOA ns h 1 2 3 4 5\n";
  ExpectError(std::string(kSoa) + "www A 1.2.3\n", "bad.zone:2: A: not an IPv4 address");
  ExpectError(std::string(kSoa) + "\n\nmx MX ten mail\n", "bad.zone:4: expected an MX preference");
  ExpectError(std::string(kSoa) + "www.other.org. A 1.2.3.4\n",
              "bad.zone:2: www.other.org. is outside");
  ExpectError(std::string(kSoa) + "x ( A\n 1.2.3.4\n", "bad.zone:2: '(' is not closed");
  ExpectError(std::string(kSoa) + "t TXT \"open\n", "bad.zone:2: a quoted string is not closed");
  ExpectError(std::string(kSoa) + "w BOGUS 1\n", "bad.zone:2: unknown or unusable record type");
  ExpectError(std::string(kSoa) + "$INCLUDE other\n", "bad.zone:2: $INCLUDE is not supported");
  ExpectError(std::string(kSoa) + "c CNAME a\nc A 1.2.3.4\n", "CNAME cannot share");
  ExpectError("www 3600 A 1.2.3.4\n", "no SOA record");
  ExpectError("@ SOA ns h 1 2 3 4 5\nx CH A 1.2.3.4\n", "bad.zone:2: class CH");
  ExpectError(std::string(kSoa) + "t TXT \"" + std::string(256, 'x') + "\"\n", "longer than 255");
  // Found by the fuzzer: a known type in RFC 3597's form must keep its shape.
  ExpectError("@ SOA \\# 0\n", "bad.zone:1: SOA: the \\# rdata does not have this type's format");
  ExpectError(std::string(kSoa) + "a A \\# 3 010203\n", "bad.zone:2: A: the \\#");
  ExpectError(std::string(kSoa) + "m MX \\# 3 000a05\n", "bad.zone:2: MX: the \\#");
}

TEST(DnsZone, RfcTtlDefaults) {
  // Without $TTL a record takes the previous record's TTL; the SOA falls
  // back to its MINIMUM.
  auto zone = ParseZone("@ SOA ns h 1 2 3 4 77\na A 1.2.3.4\nb 9 A 1.2.3.4\nc A 1.2.3.4\n",
                        "example.com.", "ttl.zone");
  ASSERT_TRUE(zone.ok()) << zone.status();
  EXPECT_EQ((*zone)->Find(Wire("a.example.com."))->Find(kTypeA)->ttl, 77u);
  EXPECT_EQ((*zone)->Find(Wire("c.example.com."))->Find(kTypeA)->ttl, 9u);
  auto units = ParseZone("$TTL 1h30m\n@ SOA ns h 1 2 3 4 1d\n", "x.", "u.zone");
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ((*units)->negative_ttl(), 5400u);
}

}  // namespace
}  // namespace capstan::gateway::dns
