#include "experiments/whatwg_url.h"

#include "absl/strings/str_split.h"
#include "experiments/js_value.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// [input, base or null, href or null (new URL throws)], as node 20's
// `new URL(input, base)` answers them. The random differential against node
// is tests/e2e/growthbook/url_differential.cjs (ctest growthbook_url_differential).
constexpr char kNodeAnswers[] = R"jsonl(
["HTTP://Ex.com:80/a/../b c?x=é#f",null,"http://ex.com/b%20c?x=%C3%A9#f"]
["https://user:pa ss@EXAMPLE.com:8443/p?q#h",null,"https://user:pa%20ss@example.com:8443/p?q#h"]
["https://0x7f.1/",null,"https://127.0.0.1/"]
["https://017.0.0.1/",null,"https://15.0.0.1/"]
["https://2130706433/",null,"https://127.0.0.1/"]
["https://1.2.3./",null,"https://1.2.0.3/"]
["https://256.1.1.1/",null,null]
["https://1.2.3.4.5/",null,null]
["https://a.0x/",null,null]
["https://[2001:DB8:0:0:1:0:0:1]/",null,"https://[2001:db8::1:0:0:1]/"]
["https://[::ffff:1.2.3.4]/",null,"https://[::ffff:102:304]/"]
["https://[1:0:0:2:0:0:0:3]/",null,"https://[1:0:0:2::3]/"]
["https://[1::2::3]/",null,null]
["https://[::1/",null,null]
["https://%41.com/",null,"https://a.com/"]
["https://a%2ecom/",null,"https://a.com/"]
["https://a%25b/",null,null]
["https://a b/",null,null]
["https://a^b/",null,null]
["https:\\\\a.com\\b\\c",null,"https://a.com/b/c"]
["  https://a.com/x\t\ny  ",null,"https://a.com/xy"]
["https://a.com/%2e%2E/x/.%2e/y/%2e",null,"https://a.com/y/"]
["https://a.com/{}`|^\"<>",null,"https://a.com/%7B%7D%60|^%22%3C%3E"]
["https://a.com/?q='\"<>`#<>`\"",null,"https://a.com/?q=%27%22%3C%3E`#%3C%3E%60%22"]
["https://u:@a.com/",null,"https://u@a.com/"]
["https://@a.com/",null,"https://a.com/"]
["https://a@b@c.com/",null,"https://a%40b@c.com/"]
["https://u:p:q@a.com/",null,"https://u:p%3Aq@a.com/"]
["http://a:b@",null,null]
["https://a.com:65536/",null,null]
["https://a.com:0443/",null,"https://a.com/"]
["https://a.com:/",null,"https://a.com/"]
["ws://a.com:80/",null,"ws://a.com/"]
["ftp://a.com:21/",null,"ftp://a.com/"]
["https:rel/x","https://h.com/a/b","https://h.com/a/rel/x"]
["https:/abs","https://h.com/a/b","https://h.com/abs"]
["http:h.com/x","https://h.com/a/b","http://h.com/x"]
["../c?q","https://h.com/a/b/d","https://h.com/a/c?q"]
["?q","https://h.com/a?x#f","https://h.com/a?q"]
["#g","https://h.com/a?x#f","https://h.com/a?x#g"]
["","https://h.com/a?x#f","https://h.com/a?x"]
["//o.org","https://h.com/a","https://o.org/"]
["\\\\o.org\\p","https://h.com/a","https://o.org/p"]
["pricing",null,null]
["https://[0:0:0:0:0:0:0:0]",null,"https://[::]/"]
["https://[1:2:3:4:5:6:7:8]:8080/",null,"https://[1:2:3:4:5:6:7:8]:8080/"]
["https://a..b./",null,"https://a..b./"]
["https://%zz/",null,null]
["https://a.com/%zz%41",null,"https://a.com/%zz%41"])jsonl";

TEST(WhatwgUrlTest, ParsesAsNodeDoes) {
  size_t cases = 0;
  for (absl::string_view line : absl::StrSplit(kNodeAnswers, '\n', absl::SkipEmpty())) {
    Json c = Json::parse(line.begin(), line.end());
    ++cases;
    UrlParseResult base;
    if (c[1].is_string()) {
      base = ParseWhatwgUrl(c[1].get<std::string>());
      ASSERT_TRUE(base.ok()) << c.dump();
    }
    UrlParseResult got =
        ParseWhatwgUrl(c[0].get<std::string>(), c[1].is_string() ? &base.url : nullptr);
    ASSERT_NE(got.status, UrlParseResult::kUnsupported) << c.dump();
    if (c[2].is_null()) {
      EXPECT_FALSE(got.ok()) << c.dump() << " gave " << got.url.Href();
    } else {
      ASSERT_TRUE(got.ok()) << c.dump();
      EXPECT_EQ(got.url.Href(), c[2].get<std::string>()) << c.dump();
    }
  }
  EXPECT_GE(cases, 45u);
}

TEST(WhatwgUrlTest, GettersAsTheUrlObjectHasThem) {
  UrlParseResult r = ParseWhatwgUrl("https://u:p@Example.com:8443/a/b?x=1#");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.url.Origin(), "https://example.com:8443");
  EXPECT_EQ(r.url.Host(), "example.com:8443");
  EXPECT_EQ(r.url.Pathname(), "/a/b");
  EXPECT_EQ(r.url.query, "x=1");
  EXPECT_EQ(r.url.Hash(), "");  // an empty fragment reads as ""
  EXPECT_EQ(r.url.Href(), "https://u:p@example.com:8443/a/b?x=1#");
}

TEST(WhatwgUrlTest, SaysWhatItDoesNotParse) {
  // file: and non-special schemes (hosts of every script are parsed:
  // idna_test.cc).
  for (const char* input :
       {"file:///etc/passwd", "mailto:a@b.c", "blob:https://a.com/x", "h+x://a/"}) {
    EXPECT_EQ(ParseWhatwgUrl(input).status, UrlParseResult::kUnsupported) << input;
  }
  EXPECT_EQ(ParseWhatwgUrl("https://\xd1\x81\xd0\xb0\xd0\xb9\xd1\x82.\xd1\x80\xd1\x84/").url.host,
            "xn--80aswg.xn--p1ai");
  EXPECT_EQ(ParseWhatwgUrl("https://a%E2%80%8D.com/").status, UrlParseResult::kFailure);
  // A non-ASCII path or query is fine: only hosts need IDNA.
  EXPECT_TRUE(ParseWhatwgUrl("https://a.com/caf\xc3\xa9?q=\xc3\xa9").ok());
  // Latin-1 letters in a host are mapped and punycoded as node does.
  EXPECT_EQ(ParseWhatwgUrl("https://B\xc3\x9c"
                           "cher.de/")
                .url.Host(),
            "xn--bcher-kva.de");
  EXPECT_EQ(ParseWhatwgUrl("https://stra\xc3\x9f"
                           "e.de/")
                .url.Host(),
            "xn--strae-oqa.de");
  EXPECT_EQ(ParseWhatwgUrl("https://%C3%A9cole.FR/").url.Host(), "xn--cole-9oa.fr");
  EXPECT_EQ(ParseWhatwgUrl("https://XN--BCHER-KVA.de/").url.Host(), "xn--bcher-kva.de");
  EXPECT_EQ(ParseWhatwgUrl("https://\xc3\xb1"
                           "and\xc3\xba.com/")
                .url.Host(),
            "xn--and-6ma2c.com");
}

TEST(WhatwgUrlTest, SearchParamsAsUrlSearchParams) {
  // new URLSearchParams("a=b+c&%zz=%C3&d&&=e&a=2"): '+' is a space, bad
  // escapes stay, a lone byte becomes U+FFFD, empty pairs are skipped.
  UrlSearchParams p = UrlSearchParams::Parse("a=b+c&%zz=%C3&d&&=e&a=2");
  ASSERT_EQ(p.pairs().size(), 5u);
  EXPECT_EQ(*p.Get("a"), "b c");
  EXPECT_EQ(*p.Get("%zz"), "\xEF\xBF\xBD");
  EXPECT_EQ(*p.Get("d"), "");
  EXPECT_EQ(*p.Get(""), "e");
  EXPECT_EQ(p.Get("x"), nullptr);
  EXPECT_EQ(p.Serialize(), "a=b+c&%25zz=%EF%BF%BD&d=&=e&a=2");
  // A leading BOM is kept (UTF-8 decode without BOM).
  EXPECT_EQ(UrlSearchParams::Parse("%EF%BB%BFa=1").pairs()[0].first,
            "\xEF\xBB\xBF"
            "a");
  // set(): the first pair takes the value, later ones with the name go.
  p.Set("a", "z y");
  p.Set("new", "*-._~!");
  EXPECT_EQ(p.Serialize(), "a=z+y&%25zz=%EF%BF%BD&d=&=e&new=*-._%7E%21");
}

}  // namespace
}  // namespace capstan::experiments
