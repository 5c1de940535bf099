#include "gateway/cache/cache_control.h"

#include "gtest/gtest.h"

namespace capstan::gateway::cache {
namespace {

CacheControl Parse(std::string_view v) {
  CacheControl cc;
  ParseCacheControlInto(v, &cc);
  return cc;
}

TEST(CacheControl, ResponseDirectives) {
  CacheControl cc = Parse(
      "public, max-age=60, s-maxage=\"120\", must-revalidate, proxy-revalidate, immutable, "
      "stale-while-revalidate=30, stale-if-error=300, no-transform");
  EXPECT_TRUE(cc.public_);
  EXPECT_EQ(cc.max_age, 60);
  EXPECT_EQ(cc.s_maxage, 120);
  EXPECT_TRUE(cc.must_revalidate);
  EXPECT_TRUE(cc.proxy_revalidate);
  EXPECT_TRUE(cc.immutable);
  EXPECT_EQ(cc.stale_while_revalidate, 30);
  EXPECT_EQ(cc.stale_if_error, 300);
  EXPECT_TRUE(cc.no_transform);
  EXPECT_FALSE(cc.no_store);
  EXPECT_FALSE(cc.private_);
}

TEST(CacheControl, CaseInsensitiveNamesAndSpaces) {
  CacheControl cc = Parse("  NO-STORE ,Max-Age = 5 ,, PRIVATE=\"set-cookie, x-a\"");
  EXPECT_TRUE(cc.no_store);
  EXPECT_EQ(cc.max_age, 5);
  EXPECT_TRUE(cc.private_);  // qualified private: treated as unqualified
}

TEST(CacheControl, FirstOccurrenceWins) {
  CacheControl cc = Parse("max-age=10, max-age=20");
  EXPECT_EQ(cc.max_age, 10);
  ParseCacheControlInto("max-age=30", &cc);
  EXPECT_EQ(cc.max_age, 10);
}

TEST(CacheControl, InvalidMaxAgeIsStale) {
  EXPECT_EQ(Parse("max-age=abc").max_age, 0);
  EXPECT_EQ(Parse("max-age").max_age, 0);
  EXPECT_EQ(Parse("s-maxage=-1").s_maxage, 0);
  EXPECT_EQ(Parse("max-age=1.5").max_age, 0);
  // Invalid optional windows are ignored instead.
  EXPECT_FALSE(Parse("stale-while-revalidate=x").stale_while_revalidate.has_value());
}

TEST(CacheControl, HugeDeltaSaturates) {
  EXPECT_EQ(Parse("max-age=99999999999999999999999").max_age, kMaxDeltaSeconds);
  EXPECT_EQ(Parse("max-age=2147483648").max_age, kMaxDeltaSeconds);
  EXPECT_EQ(Parse("max-age=2147483647").max_age, 2147483647);
}

TEST(CacheControl, RequestDirectives) {
  CacheControl cc = Parse("max-stale, min-fresh=10, only-if-cached, no-cache, max-age=0");
  EXPECT_TRUE(cc.max_stale_any);
  EXPECT_FALSE(cc.max_stale.has_value());
  EXPECT_EQ(cc.min_fresh, 10);
  EXPECT_TRUE(cc.only_if_cached);
  EXPECT_TRUE(cc.no_cache);
  EXPECT_EQ(cc.max_age, 0);
  CacheControl bounded = Parse("max-stale=5");
  EXPECT_FALSE(bounded.max_stale_any);
  EXPECT_EQ(bounded.max_stale, 5);
}

TEST(CacheControl, QuotedCommaDoesNotSplit) {
  CacheControl cc = Parse("no-cache=\"a, max-age=5\", s-maxage=7");
  EXPECT_TRUE(cc.no_cache);
  EXPECT_FALSE(cc.max_age.has_value());
  EXPECT_EQ(cc.s_maxage, 7);
}

TEST(CacheControl, FieldsAndPragma) {
  net::http1::HeaderFields f;
  f.Add("Cache-Control", "max-age=5");
  f.Add("cache-control", "no-transform, max-age=9");
  CacheControl cc = ParseCacheControl(f);
  EXPECT_EQ(cc.max_age, 5);
  EXPECT_TRUE(cc.no_transform);
  net::http1::HeaderFields p;
  p.Add("pragma", "no-cache");
  EXPECT_TRUE(ParseCacheControl(p, /*request=*/true).no_cache);
  EXPECT_FALSE(ParseCacheControl(p, /*request=*/false).no_cache);
  p.Add("cache-control", "max-stale");
  EXPECT_FALSE(ParseCacheControl(p, /*request=*/true).no_cache);  // Cache-Control wins
}

TEST(HttpDate, ThreeForms) {
  const int64_t kExpected = 784111777;  // 1994-11-06 08:49:37 UTC
  EXPECT_EQ(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), kExpected);
  EXPECT_EQ(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), kExpected);
  EXPECT_EQ(ParseHttpDate("Sun Nov  6 08:49:37 1994"), kExpected);
  EXPECT_EQ(ParseHttpDate(" Sun, 06 Nov 1994 08:49:37 GMT "), kExpected);
}

TEST(HttpDate, Invalid) {
  EXPECT_FALSE(ParseHttpDate(""));
  EXPECT_FALSE(ParseHttpDate("0"));
  EXPECT_FALSE(ParseHttpDate("-1"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 PST"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Foo 1994 08:49:37 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994 25:49:37 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT trailing"));
}

TEST(HttpDate, OneSpaceBetweenPartsOfFixdateAndRfc850) {
  // cache-tests freshness-expires-invalid-multiple-spaces.
  EXPECT_FALSE(ParseHttpDate("Thu, 18  Aug  2050 02:01:18 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun,  06 Nov 1994 08:49:37 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994  08:49:37 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37  GMT"));
  EXPECT_FALSE(ParseHttpDate("Sunday, 06-Nov-94  08:49:37 GMT"));
  EXPECT_TRUE(ParseHttpDate("Thu, 18 Aug 2050 02:01:18 GMT"));
}

CacheControl Targeted(std::string_view v, bool* ok) {
  CacheControl cc;
  *ok = ParseTargetedCacheControl(v, &cc);
  return cc;
}

TEST(TargetedCacheControl, StructuredDictionary) {
  bool ok = false;
  CacheControl cc = Targeted("max-age=3600, must-revalidate, private=?1, no-store=?0", &ok);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(cc.targeted);
  EXPECT_EQ(cc.max_age, 3600);
  EXPECT_TRUE(cc.must_revalidate);
  EXPECT_TRUE(cc.private_);
  EXPECT_FALSE(cc.no_store);
  // Extensions of any type are accepted and ignored.
  cc = Targeted("foobar, max-age=60;p=1, x=\"s\", y=:YWJj:, z=(1 2.5 tok), w=?1, v=-3", &ok);
  ASSERT_TRUE(ok);
  EXPECT_EQ(cc.max_age, 60);
  // Past 2^31: 2^31 (cache-tests cdn-max-age-max-plus).
  EXPECT_EQ(Targeted("max-age=99999999999", &ok).max_age, kMaxDeltaSeconds);
  EXPECT_TRUE(ok);
  // A repeated key: the last wins (a Dictionary), unlike Cache-Control.
  EXPECT_EQ(Targeted("max-age=1, max-age=2", &ok).max_age, 2);
}

TEST(TargetedCacheControl, InvalidFieldsAreIgnored) {
  bool ok = true;
  for (std::string_view bad :
       {"max-age=10000, &&&&&", "max-age=\"10000\"", "max-age =100", "max-age= 100", "MaX-aGe=3600",
        "no-store=1", "max-age=-1", "max-age=1,", "", "   ", "max-age=1.5", "a=\"unterminated",
        "max-age=1234567890123456"}) {
    CacheControl cc;
    cc.max_age = 7;
    EXPECT_FALSE(ParseTargetedCacheControl(bad, &cc)) << bad;
    EXPECT_EQ(cc.max_age, 7) << bad;  // untouched
  }
  (void)ok;
}

TEST(TargetedCacheControl, FirstValidFieldOfTheListWins) {
  net::http1::HeaderFields f;
  f.Add("cache-control", "max-age=5");
  f.Add("capstan-cache-control", "max-age=\"bad\"");
  f.Add("cdn-cache-control", "max-age=60");
  f.Add("CDN-Cache-Control", "stale-if-error=30");  // a second line: one list
  CacheControl cc = ResponseCacheControl(f, {"capstan-cache-control", "cdn-cache-control"});
  EXPECT_TRUE(cc.targeted);
  EXPECT_EQ(cc.max_age, 60);
  EXPECT_EQ(cc.stale_if_error, 30);
  f.Set("capstan-cache-control", "max-age=600");
  EXPECT_EQ(ResponseCacheControl(f, {"capstan-cache-control", "cdn-cache-control"}).max_age, 600);
  // None valid: Cache-Control.
  net::http1::HeaderFields only_bad;
  only_bad.Add("cache-control", "max-age=5");
  only_bad.Add("cdn-cache-control", "&&&");
  CacheControl fallback = ResponseCacheControl(only_bad, {"cdn-cache-control"});
  EXPECT_FALSE(fallback.targeted);
  EXPECT_EQ(fallback.max_age, 5);
}

TEST(HttpDate, FormatRoundTrips) {
  EXPECT_EQ(FormatHttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  for (int64_t t : {0LL, 951782400LL, 1700000000LL, 4102444800LL}) {
    EXPECT_EQ(ParseHttpDate(FormatHttpDate(t)), t) << t;
  }
}

}  // namespace
}  // namespace capstan::gateway::cache
