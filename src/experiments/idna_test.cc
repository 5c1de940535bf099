#include "experiments/idna.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "experiments/js_value.h"
#include "experiments/whatwg_url.h"

namespace capstan::experiments {
namespace {

// [host, new URL("https://" + host + "/").host in node 20 (null: it
// throws)]: scripts, case folding, full-width and ideographic dots,
// deviation and ignored code points, combining marks (a Unicode 14 one is no
// mark to node), joiners, bidi (an ASCII label in a bidi name is not
// checked), "xn--" labels node accepts and refuses, disallowed code points,
// percent-escaped UTF-8.
constexpr std::string_view kNodeHosts = R"jsonl(
["\u0441\u0430\u0439\u0442.\u0440\u0444","xn--80aswg.xn--p1ai"]
["\u041f\u0420\u0418\u041c\u0415\u0420.\u0420\u0424","xn--e1afmkfd.xn--p1ai"]
["\u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac.gr","xn--hxargifdar.gr"]
["\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3.gr","xn--kxa6akbbkh.gr"]
["\u4f8b\u3048.\u30c6\u30b9\u30c8","xn--r8jz45g.xn--zckzah"]
["\ud55c\uad6d.kr","xn--3e0b707e.kr"]
["\u0645\u062b\u0627\u0644.\u0625\u062e\u062a\u0628\u0627\u0631","xn--mgbh0fb.xn--kgbechtv"]
["a\u3002b\uff0ec\uff61d","a.b.c.d"]
["\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d","example.com"]
["fa\u00dfe.de","xn--fae-6ka.de"]
["\u1e9e.de","ss.de"]
["so\u00adft.com","soft.com"]
["\u00ad",null]
["\u0301a.com",null]
["\u0898a.com","xn--a-ond.com"]
["a\u0301.com","xn--1ca.com"]
["\ud83d\ude00.com","xn--e28h.com"]
["\u2764\ufe0f.com","xn--qei.com"]
["xn--a-","xn--a-"]
["xn--",null]
["xn--a",null]
["XN--P1AI","xn--p1ai"]
["xn--zca","xn--zca"]
["xn--nxa","xn--nxa"]
["xn--ls8h.la","xn--ls8h.la"]
["xn--i\u00f1.com",null]
["a\u200db.com",null]
["\u0915\u094d\u200d\u0937.in","xn--11b2ezcw70k.in"]
["\u0628\u200c\u0628.ir","xn--ngba799q.ir"]
["a\u200cb.com",null]
["-a.\u0628","-a.xn--ngb"]
["1.\u05d0","1.xn--4db"]
["\u05d0\u0661.com","xn--4db40a.com"]
["\u05d01.com","xn--1-zhc.com"]
["\u2488.com",null]
["\u2474.com","(1).com"]
["a\u2260b.com","xn--ab-miv.com"]
["\ufffd.com",null]
["\ue000.com",null]
["%D1%80%D1%84","xn--p1ai"]
["%C3%28.com",null]
["a\uff0fb.com",null]
["\u0378.com",null]
["\u1734.com",null]
["a\u1734.com","xn--a-frj.com"]
["\u0627\u1734.com","xn--mgb448f.com"]
)jsonl";

TEST(IdnaTest, HostsAsNodeHasThem) {
  std::string_view all = kNodeHosts;
  size_t cases = 0;
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\n', start);
    if (end == std::string_view::npos) end = all.size();
    std::string_view line = all.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    ++cases;
    Json c = Json::parse(line);
    UrlParseResult got = ParseWhatwgUrl("https://" + c[0].get<std::string>() + "/");
    ASSERT_NE(got.status, UrlParseResult::kUnsupported) << c.dump();
    if (c[1].is_null()) {
      EXPECT_EQ(got.status, UrlParseResult::kFailure) << c.dump() << " gave " << got.url.host;
    } else {
      ASSERT_TRUE(got.ok()) << c.dump();
      EXPECT_EQ(got.url.host, c[1].get<std::string>()) << c.dump();
    }
  }
  EXPECT_GE(cases, 40u);
}

TEST(IdnaTest, DomainToAscii) {
  // ASCII: lower-cased, only "xn--" labels checked.
  IdnaResult r = DomainToAscii("XN--P1AI.Example");
  ASSERT_EQ(r.status, IdnaResult::kOk);
  EXPECT_EQ(r.ascii, "xn--p1ai.example");
  EXPECT_EQ(DomainToAscii("xn--p1ai.xn--").status, IdnaResult::kFailure);
  // Empty labels and hyphens anywhere are fine (CheckHyphens and
  // VerifyDnsLength are off).
  r = DomainToAscii("-\xd1\x80\xd1\x84-..xn--p1ai.");
  ASSERT_EQ(r.status, IdnaResult::kOk);
  EXPECT_EQ(r.ascii, "xn-----lmcq..xn--p1ai.");
  // Only ignored code points: nothing left, a failure.
  EXPECT_EQ(DomainToAscii("\xc2\xad\xc2\xad").status, IdnaResult::kFailure);
  // Invalid UTF-8 and a punycode label that overflows.
  EXPECT_EQ(DomainToAscii("\xc3(").status, IdnaResult::kFailure);
  EXPECT_EQ(DomainToAscii("xn--99999999999a").status, IdnaResult::kFailure);
  // A long label of high code points encodes without overflow.
  std::string long_label;
  for (int i = 0; i < 300; ++i) long_label += "\xf0\x9f\x98\x80";  // U+1F600
  r = DomainToAscii(long_label);
  ASSERT_EQ(r.status, IdnaResult::kOk);
  EXPECT_EQ(r.ascii.substr(0, 4), "xn--");
  // Round trip: the ASCII form is a valid host again and stays as it is.
  IdnaResult again = DomainToAscii(r.ascii);
  ASSERT_EQ(again.status, IdnaResult::kOk);
  EXPECT_EQ(again.ascii, r.ascii);
}

}  // namespace
}  // namespace capstan::experiments
