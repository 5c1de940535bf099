#include "gateway/dns/message.h"

#include <gtest/gtest.h>

namespace capstan::gateway::dns {
namespace {

std::string Wire(std::string_view text) { return NameFromText(text, std::string(1, '\0')).value(); }

TEST(DnsName, TextRoundTripAndEscapes) {
  EXPECT_EQ(Wire("www.Example.com."), std::string("\3www\7Example\3com\0", 17));
  EXPECT_EQ(NameToText(Wire("www.Example.com.")), "www.Example.com.");
  EXPECT_EQ(NameToText(Wire("a\\.b.c.")), "a\\.b.c.");
  EXPECT_EQ(Wire("\\065.c."), Wire("A.c."));
  EXPECT_EQ(NameToText(std::string(1, '\0')), ".");
  EXPECT_EQ(NameFromText("www", Wire("example.com.")).value(), Wire("www.example.com."));
  EXPECT_EQ(NameFromText("@", Wire("example.com.")).value(), Wire("example.com."));
  EXPECT_FALSE(NameFromText("a..b.", Wire(".")).ok());
  EXPECT_FALSE(NameFromText(std::string(64, 'a') + ".", Wire(".")).ok());
  std::string long_name;
  for (int i = 0; i < 50; ++i) long_name += "abcd.";
  EXPECT_FALSE(NameFromText(long_name + "abcdefg.", Wire(".")).ok());
}

TEST(DnsName, SubdomainAndCase) {
  EXPECT_TRUE(IsSubdomain(Wire("a.B.example.com."), Wire("EXAMPLE.com.")));
  EXPECT_TRUE(IsSubdomain(Wire("example.com."), Wire("example.com.")));
  EXPECT_FALSE(IsSubdomain(Wire("badexample.com."), Wire("example.com.")));
  EXPECT_FALSE(IsSubdomain(Wire("com."), Wire("example.com.")));
  EXPECT_TRUE(NamesEqual(Wire("WwW.x."), Wire("www.X.")));
  EXPECT_EQ(LabelCount(Wire("a.b.c.")), 3);
}

TEST(DnsMessage, QueryParseWithEdns) {
  std::string q = BuildQuery(Wire("www.example.com."), kTypeAAAA, 0x1234, 4096);
  Query parsed;
  ASSERT_EQ(ParseQuery(q, &parsed), QueryParse::kOk);
  EXPECT_EQ(parsed.id, 0x1234);
  EXPECT_EQ(parsed.qtype, kTypeAAAA);
  EXPECT_TRUE(parsed.has_edns);
  EXPECT_EQ(parsed.udp_payload, 4096);
  EXPECT_EQ(parsed.qname_view(), Wire("www.example.com."));
  // Payload sizes below 512 count as 512 (RFC 6891 section 6.2.3).
  q = BuildQuery(Wire("x."), kTypeA, 1, 100);
  ASSERT_EQ(ParseQuery(q, &parsed), QueryParse::kOk);
  EXPECT_EQ(parsed.udp_payload, 512);
}

TEST(DnsMessage, QueryParseRejects) {
  Query parsed;
  EXPECT_EQ(ParseQuery("short", &parsed), QueryParse::kDrop);
  std::string q = BuildQuery(Wire("x."), kTypeA, 1);
  std::string response = q;
  response[2] |= static_cast<char>(0x80);
  EXPECT_EQ(ParseQuery(response, &parsed), QueryParse::kDrop);
  std::string two = q;
  two[5] = 2;
  EXPECT_EQ(ParseQuery(two, &parsed), QueryParse::kFormErr);
  std::string notify = q;
  notify[2] = static_cast<char>(4 << 3);
  EXPECT_EQ(ParseQuery(notify, &parsed), QueryParse::kNotImp);
  EXPECT_EQ(ParseQuery(q.substr(0, q.size() - 1), &parsed), QueryParse::kFormErr);
  // Two OPT records.
  std::string q2 = BuildQuery(Wire("x."), kTypeA, 1, 1232);
  std::string opt = q2.substr(q2.size() - 11);
  q2 += opt;
  q2[11] = 2;
  EXPECT_EQ(ParseQuery(q2, &parsed), QueryParse::kFormErr);
}

TEST(DnsMessage, WriterCompressesAndParserDecompresses) {
  Query q;
  std::string qwire = BuildQuery(Wire("WWW.example.com."), kTypeMX, 7, 1232);
  ASSERT_EQ(ParseQuery(qwire, &q), QueryParse::kOk);
  uint8_t buf[512];
  MessageWriter w(buf, sizeof(buf));
  w.StartResponse(q, kRcodeNoError, true);
  std::string mx = std::string("\0\12", 2) + Wire("mail.example.com.");
  ASSERT_TRUE(w.AddRecord(Section::kAnswer, Wire("www.example.com."), kTypeMX, 300, mx));
  ASSERT_TRUE(w.AddRecord(Section::kAdditional, Wire("mail.example.com."), kTypeA, 300,
                          std::string("\1\2\3\4", 4)));
  ASSERT_TRUE(w.AddOpt(1232, 0, 0));
  size_t n = w.Finish();
  // Question 16+4, answer: pointer 2 + 10 + (2 + "mail" 5 + pointer 2),
  // additional: pointer 2 + 10 + 4, OPT 11.
  EXPECT_EQ(n, 12u + 21 + 21 + 16 + 11);
  auto m = ParseMessage(std::string_view(reinterpret_cast<char*>(buf), n));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->id, 7);
  EXPECT_TRUE(m->flags & kFlagQR);
  EXPECT_TRUE(m->flags & kFlagAA);
  ASSERT_EQ(m->answers.size(), 1u);
  // The owner points at the question, so the client's case is kept.
  EXPECT_EQ(m->answers[0].name, Wire("WWW.example.com."));
  EXPECT_EQ(m->answers[0].rdata, mx);
  EXPECT_EQ(RdataToText(kTypeMX, m->answers[0].rdata), "10 mail.example.com.");
  ASSERT_EQ(m->additional.size(), 2u);
  EXPECT_EQ(m->additional[1].type, kTypeOPT);
}

TEST(DnsMessage, WriterRespectsItsLimit) {
  Query q;
  ASSERT_EQ(ParseQuery(BuildQuery(Wire("a."), kTypeTXT, 1), &q), QueryParse::kOk);
  uint8_t buf[100];
  MessageWriter w(buf, sizeof(buf));
  w.StartResponse(q, kRcodeNoError, true);
  std::string txt(40, 'x');
  txt[0] = 39;
  EXPECT_TRUE(w.AddRecord(Section::kAnswer, Wire("a."), kTypeTXT, 1, txt));
  size_t before = w.size();
  EXPECT_FALSE(w.AddRecord(Section::kAnswer, Wire("a."), kTypeTXT, 1, txt));
  EXPECT_EQ(w.size(), before);
  EXPECT_EQ(w.count(Section::kAnswer), 1);
}

TEST(DnsMessage, ParserRefusesPointerLoopsAndOverruns) {
  // A name that points at itself.
  std::string m = BuildQuery(Wire("a."), kTypeA, 1);
  m[7] = 1;                         // one answer, right after the question
  m += std::string("\xc0\x13", 2);  // its name points at itself (offset 19)
  m += std::string("\0\1\0\1\0\0\0\0\0\0", 10);
  EXPECT_FALSE(ParseMessage(m).ok());
  std::string truncated = BuildQuery(Wire("abc."), kTypeA, 1);
  EXPECT_FALSE(ParseMessage(truncated.substr(0, 15)).ok());
}

TEST(DnsMessage, TypeNames) {
  EXPECT_EQ(TypeFromName("aaaa"), kTypeAAAA);
  EXPECT_EQ(TypeFromName("TYPE65280"), 65280);
  EXPECT_EQ(TypeFromName("NOPE"), 0);
  EXPECT_EQ(TypeName(65280), "TYPE65280");
}

}  // namespace
}  // namespace capstan::gateway::dns
