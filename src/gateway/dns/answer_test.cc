#include "gateway/dns/answer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace capstan::gateway::dns {
namespace {

std::string Wire(std::string_view text) { return NameFromText(text, std::string(1, '\0')).value(); }

constexpr std::string_view kZone = R"(
$ORIGIN example.com.
$TTL 3600
@     SOA ns1 hostmaster 1 7200 3600 1209600 300
@     NS  ns1
@     MX  10 mail
ns1   A   192.0.2.1
mail  A   192.0.2.2
mail  AAAA 2001:db8::2
www   CNAME web
web   A   192.0.2.3
out   CNAME www.example.net.
loop1 CNAME loop2
loop2 CNAME loop1
gone  CNAME nothing
*.wild A  192.0.2.9
a.b.c A   192.0.2.10
sub   NS  ns.sub
ns.sub A  192.0.2.53
big   TXT "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big   TXT "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big   TXT "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big   TXT "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big   TXT "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big   TXT "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
)";

class DnsAnswer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto zone = ParseZone(kZone, "", "answer.zone");
    ASSERT_TRUE(zone.ok()) << zone.status();
    zones_.Add(std::shared_ptr<const Zone>(std::move(zone).value()));
  }
  Message Ask(std::string_view name, uint16_t type, uint16_t edns = 0,
              Transport transport = Transport::kUdp) {
    std::string q = BuildQuery(Wire(name), type, 99, edns);
    return AskRaw(q, transport);
  }
  Message AskRaw(std::string_view q, Transport transport = Transport::kUdp) {
    AnswerResult r = Answer(zones_, q, transport, {}, out_);
    last_size_ = r.size;
    EXPECT_GT(r.size, 0u);
    auto m = ParseMessage(std::string_view(reinterpret_cast<char*>(out_), r.size));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : Message{};
  }
  std::vector<std::string> Texts(const std::vector<ResourceRecord>& rrs) {
    std::vector<std::string> out;
    for (const auto& rr : rrs) {
      if (rr.type == kTypeOPT) continue;
      out.push_back(NameToText(rr.name) + " " + std::to_string(rr.ttl) + " " + TypeName(rr.type) +
                    " " + RdataToText(rr.type, rr.rdata));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  ZoneSet zones_;
  uint8_t out_[kMaxMessage];
  size_t last_size_ = 0;
};

using ::testing::ElementsAre;

TEST_F(DnsAnswer, PositiveWithAdditionalAddresses) {
  Message m = Ask("example.com.", kTypeMX);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  EXPECT_TRUE(m.flags & kFlagAA);
  EXPECT_EQ(m.id, 99);
  EXPECT_THAT(Texts(m.answers), ElementsAre("example.com. 3600 MX 10 mail.example.com."));
  // The zone's NS in authority, as NSD answers.
  EXPECT_THAT(Texts(m.authority), ElementsAre("example.com. 3600 NS ns1.example.com."));
  EXPECT_THAT(Texts(m.additional), ElementsAre("mail.example.com. 3600 A 192.0.2.2",
                                               "mail.example.com. 3600 AAAA 2001:db8::2",
                                               "ns1.example.com. 3600 A 192.0.2.1"));
  // Minimal responses (Knot's shape) leave it out.
  AnswerResult minimal = Answer(zones_, BuildQuery(Wire("example.com."), kTypeMX, 1),
                                Transport::kUdp, {.minimal_responses = true}, out_);
  auto mm = ParseMessage(std::string_view(reinterpret_cast<char*>(out_), minimal.size));
  ASSERT_TRUE(mm.ok());
  EXPECT_TRUE(mm->authority.empty());
  EXPECT_THAT(Texts(mm->additional), ElementsAre("mail.example.com. 3600 A 192.0.2.2",
                                                 "mail.example.com. 3600 AAAA 2001:db8::2"));
  // Not when the answer is that NS RRset.
  Message ns = Ask("example.com.", kTypeNS);
  EXPECT_TRUE(ns.authority.empty());
  EXPECT_THAT(Texts(ns.additional), ElementsAre("ns1.example.com. 3600 A 192.0.2.1"));
}

TEST_F(DnsAnswer, CaseInsensitiveWithCasePreserved) {
  Message m = Ask("NS1.Example.COM.", kTypeA);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(m.questions[0].name, Wire("NS1.Example.COM."));
  EXPECT_EQ(m.answers[0].name, Wire("NS1.Example.COM."));
}

TEST_F(DnsAnswer, NxdomainAndNodataCarryTheSoaWithTheNegativeTtl) {
  Message nx = Ask("nope.example.com.", kTypeA);
  EXPECT_EQ(nx.rcode(), kRcodeNxDomain);
  EXPECT_TRUE(nx.flags & kFlagAA);
  EXPECT_TRUE(nx.answers.empty());
  ASSERT_EQ(nx.authority.size(), 1u);
  EXPECT_EQ(nx.authority[0].type, kTypeSOA);
  EXPECT_EQ(nx.authority[0].ttl, 300u);
  Message nodata = Ask("mail.example.com.", kTypeTXT);
  EXPECT_EQ(nodata.rcode(), kRcodeNoError);
  EXPECT_TRUE(nodata.answers.empty());
  ASSERT_EQ(nodata.authority.size(), 1u);
  EXPECT_EQ(nodata.authority[0].type, kTypeSOA);
  // An empty non-terminal is NODATA, not NXDOMAIN.
  Message ent = Ask("b.c.example.com.", kTypeA);
  EXPECT_EQ(ent.rcode(), kRcodeNoError);
  EXPECT_EQ(ent.authority.size(), 1u);
}

TEST_F(DnsAnswer, CnameChasedWithinTheZone) {
  Message m = Ask("www.example.com.", kTypeA);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  EXPECT_THAT(Texts(m.answers), ElementsAre("web.example.com. 3600 A 192.0.2.3",
                                            "www.example.com. 3600 CNAME web.example.com."));
  Message cname = Ask("www.example.com.", kTypeCNAME);
  EXPECT_THAT(Texts(cname.answers), ElementsAre("www.example.com. 3600 CNAME web.example.com."));
  Message out = Ask("out.example.com.", kTypeA);
  EXPECT_EQ(out.rcode(), kRcodeNoError);
  EXPECT_EQ(out.answers.size(), 1u);
  EXPECT_TRUE(out.authority.empty());
  // A chain ending nowhere: NXDOMAIN for the last name (RFC 6604).
  Message gone = Ask("gone.example.com.", kTypeA);
  EXPECT_EQ(gone.rcode(), kRcodeNxDomain);
  EXPECT_EQ(gone.answers.size(), 1u);
  EXPECT_EQ(gone.authority.size(), 1u);
  // A loop stops where it closes.
  Message loop = Ask("loop1.example.com.", kTypeA);
  EXPECT_EQ(loop.rcode(), kRcodeNoError);
  EXPECT_THAT(Texts(loop.answers), ElementsAre("loop1.example.com. 3600 CNAME loop2.example.com.",
                                               "loop2.example.com. 3600 CNAME loop1.example.com."));
  EXPECT_TRUE(loop.authority.empty());
}

TEST_F(DnsAnswer, WildcardSynthesizesTheQueryName) {
  Message m = Ask("anything.wild.example.com.", kTypeA);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  EXPECT_THAT(Texts(m.answers), ElementsAre("anything.wild.example.com. 3600 A 192.0.2.9"));
  Message nodata = Ask("x.wild.example.com.", kTypeMX);
  EXPECT_EQ(nodata.rcode(), kRcodeNoError);
  EXPECT_TRUE(nodata.answers.empty());
}

TEST_F(DnsAnswer, DelegationGivesAReferral) {
  Message m = Ask("host.sub.example.com.", kTypeA);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  EXPECT_FALSE(m.flags & kFlagAA);
  EXPECT_TRUE(m.answers.empty());
  EXPECT_THAT(Texts(m.authority), ElementsAre("sub.example.com. 3600 NS ns.sub.example.com."));
  EXPECT_THAT(Texts(m.additional), ElementsAre("ns.sub.example.com. 3600 A 192.0.2.53"));
}

TEST_F(DnsAnswer, RefusedOutsideTheZonesAndForOtherClasses) {
  Message m = Ask("example.org.", kTypeA);
  EXPECT_EQ(m.rcode(), kRcodeRefused);
  EXPECT_FALSE(m.flags & kFlagAA);
  std::string ch = BuildQuery(Wire("example.com."), kTypeA, 1);
  ch[ch.size() - 1] = 3;  // class CH
  EXPECT_EQ(AskRaw(ch).rcode(), kRcodeRefused);
  EXPECT_EQ(Ask("example.com.", kTypeAXFR).rcode(), kRcodeRefused);
}

TEST_F(DnsAnswer, AnyGivesOneRRset) {
  Message m = Ask("mail.example.com.", kTypeANY);
  EXPECT_EQ(m.rcode(), kRcodeNoError);
  ASSERT_EQ(m.answers.size(), 1u);
}

TEST_F(DnsAnswer, TruncatesOverUdpAndFitsOverTcp) {
  Message udp = Ask("big.example.com.", kTypeTXT);
  EXPECT_TRUE(udp.flags & kFlagTC);
  EXPECT_TRUE(udp.answers.empty());
  EXPECT_LE(last_size_, 512u);
  Message edns = Ask("big.example.com.", kTypeTXT, 4096);
  EXPECT_FALSE(edns.flags & kFlagTC);
  EXPECT_EQ(edns.answers.size(), 6u);
  ASSERT_FALSE(edns.additional.empty());
  EXPECT_EQ(edns.additional.back().type, kTypeOPT);
  EXPECT_EQ(edns.additional.back().klass, 1232);  // our payload size
  Message tcp = Ask("big.example.com.", kTypeTXT, 0, Transport::kTcp);
  EXPECT_FALSE(tcp.flags & kFlagTC);
  EXPECT_EQ(tcp.answers.size(), 6u);
}

TEST_F(DnsAnswer, EdnsVersionOtherThanZeroIsBadvers) {
  std::string q = BuildQuery(Wire("example.com."), kTypeA, 1, 1232);
  q[q.size() - 5] = 1;  // the OPT TTL's version byte
  Message m = AskRaw(q);
  EXPECT_EQ(m.rcode(), 0);
  ASSERT_EQ(m.additional.size(), 1u);
  EXPECT_EQ(m.additional[0].ttl >> 24, 1u);  // extended rcode 16 = 1 << 4
}

TEST_F(DnsAnswer, MalformedQueries) {
  std::string q = BuildQuery(Wire("example.com."), kTypeA, 5);
  q[5] = 0;  // no question
  Message m = AskRaw(q);
  EXPECT_EQ(m.rcode(), kRcodeFormErr);
  EXPECT_EQ(m.id, 5);
  std::string notify = BuildQuery(Wire("example.com."), kTypeSOA, 6);
  notify[2] = static_cast<char>(4 << 3);
  EXPECT_EQ(AskRaw(notify).rcode(), kRcodeNotImp);
  std::string response = BuildQuery(Wire("example.com."), kTypeA, 7);
  response[2] = static_cast<char>(0x80);
  EXPECT_EQ(Answer(zones_, response, Transport::kUdp, {}, out_).size, 0u);
}

TEST_F(DnsAnswer, SlipResponseIsTheQuestionWithTc) {
  std::string q = BuildQuery(Wire("www.example.com."), kTypeA, 8, 1232);
  size_t n = TruncatedResponse(q, out_, sizeof(out_));
  auto m = ParseMessage(std::string_view(reinterpret_cast<char*>(out_), n));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->flags & kFlagTC);
  EXPECT_EQ(m->questions.size(), 1u);
  EXPECT_TRUE(m->answers.empty());
}

}  // namespace
}  // namespace capstan::gateway::dns
