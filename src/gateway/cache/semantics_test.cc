#include "gateway/cache/semantics.h"

#include "gtest/gtest.h"

namespace capstan::gateway::cache {
namespace {

constexpr int64_t kNow = 1700000000;

Fields Make(std::initializer_list<std::pair<std::string_view, std::string_view>> list) {
  Fields f;
  for (const auto& [n, v] : list) f.Add(n, v);
  return f;
}

const char* Why(const Fields& req, int status, const Fields& res, std::string_view method = "GET") {
  return WhyNotStorable(method, req, ParseCacheControl(req, true), status, res,
                        ParseCacheControl(res));
}

TEST(Storable, ExplicitFreshnessOrHeuristicStatus) {
  Fields req;
  EXPECT_EQ(Why(req, 200, Make({{"cache-control", "max-age=60"}})), nullptr);
  EXPECT_EQ(Why(req, 200, Make({})), nullptr);  // 200 is heuristically cacheable
  EXPECT_EQ(Why(req, 404, Make({})), nullptr);
  EXPECT_NE(Why(req, 302, Make({})), nullptr);
  EXPECT_EQ(Why(req, 302, Make({{"cache-control", "max-age=5"}})), nullptr);
  EXPECT_EQ(Why(req, 302, Make({{"expires", "Sun, 06 Nov 2094 08:49:37 GMT"}})), nullptr);
  EXPECT_EQ(Why(req, 500, Make({{"cache-control", "public"}})), nullptr);
  EXPECT_NE(Why(req, 500, Make({})), nullptr);
}

TEST(Storable, Refusals) {
  Fields req;
  EXPECT_NE(Why(req, 200, Make({{"cache-control", "no-store"}})), nullptr);
  EXPECT_NE(Why(req, 200, Make({{"cache-control", "private, max-age=60"}})), nullptr);
  EXPECT_NE(Why(req, 206, Make({{"cache-control", "max-age=60"}})), nullptr);
  EXPECT_NE(Why(req, 304, Make({{"cache-control", "max-age=60"}})), nullptr);
  EXPECT_NE(Why(req, 100, Make({})), nullptr);
  EXPECT_NE(Why(req, 200, Make({{"cache-control", "max-age=60"}}), "POST"), nullptr);
  EXPECT_NE(Why(req, 200, Make({{"cache-control", "max-age=60"}}), "HEAD"), nullptr);
  EXPECT_NE(Why(req, 200, Make({{"cache-control", "max-age=60"}, {"vary", "a, *"}})), nullptr);
  EXPECT_NE(
      Why(Make({{"cache-control", "no-store"}}), 200, Make({{"cache-control", "max-age=60"}})),
      nullptr);
}

TEST(Storable, MustUnderstandOverridesNoStoreForKnownStatus) {
  Fields req;
  EXPECT_EQ(Why(req, 200, Make({{"cache-control", "must-understand, no-store, max-age=60"}})),
            nullptr);
  EXPECT_NE(Why(req, 299, Make({{"cache-control", "must-understand, no-store, max-age=60"}})),
            nullptr);
  EXPECT_NE(Why(req, 299, Make({{"cache-control", "must-understand, max-age=60"}})), nullptr);
}

TEST(Storable, AuthorizationNeedsPermission) {
  Fields auth = Make({{"authorization", "Bearer x"}});
  EXPECT_NE(Why(auth, 200, Make({{"cache-control", "max-age=60"}})), nullptr);
  EXPECT_EQ(Why(auth, 200, Make({{"cache-control", "public, max-age=60"}})), nullptr);
  EXPECT_EQ(Why(auth, 200, Make({{"cache-control", "s-maxage=60"}})), nullptr);
  EXPECT_EQ(Why(auth, 200, Make({{"cache-control", "must-revalidate, max-age=60"}})), nullptr);
}

int64_t Lifetime(const Fields& res, int status = 200) {
  return FreshnessLifetime(status, res, ParseCacheControl(res), kNow, FreshnessOptions{});
}

TEST(Freshness, PrecedenceSMaxAgeMaxAgeExpires) {
  std::string date = FormatHttpDate(kNow);
  std::string expires = FormatHttpDate(kNow + 300);
  EXPECT_EQ(Lifetime(Make({{"cache-control", "max-age=60, s-maxage=120"}, {"expires", expires}})),
            120);
  EXPECT_EQ(Lifetime(Make({{"cache-control", "max-age=60"}, {"expires", expires}})), 60);
  EXPECT_EQ(Lifetime(Make({{"date", date}, {"expires", expires}})), 300);
  // Expires relative to Date, not to the local clock.
  EXPECT_EQ(Lifetime(Make({{"date", FormatHttpDate(kNow - 100)}, {"expires", expires}})), 400);
  EXPECT_EQ(Lifetime(Make({{"expires", "0"}})), 0);
  EXPECT_EQ(Lifetime(Make({{"date", date}, {"expires", FormatHttpDate(kNow - 5)}})), 0);
}

TEST(Freshness, HeuristicTenPercentCapped) {
  std::string date = FormatHttpDate(kNow);
  EXPECT_EQ(Lifetime(Make({{"date", date}, {"last-modified", FormatHttpDate(kNow - 1000)}})), 100);
  EXPECT_EQ(Lifetime(Make({{"date", date}, {"last-modified", FormatHttpDate(kNow - 100000000)}})),
            86400);
  // Not for a status that is not heuristically cacheable.
  EXPECT_EQ(Lifetime(Make({{"date", date}, {"last-modified", FormatHttpDate(kNow - 1000)}}), 302),
            0);
  EXPECT_EQ(Lifetime(Make({{"date", date}})), 0);
}

TEST(Age, CorrectedInitialAge) {
  // Age field plus the response delay.
  Fields res = Make({{"date", FormatHttpDate(kNow)}, {"age", "30"}});
  EXPECT_EQ(CorrectedInitialAge(res, kNow - 2, kNow), 32);
  // A Date in the past makes the apparent age count.
  Fields old = Make({{"date", FormatHttpDate(kNow - 50)}});
  EXPECT_EQ(CorrectedInitialAge(old, kNow, kNow), 50);
  // A Date in the future does not make it negative.
  Fields future = Make({{"date", FormatHttpDate(kNow + 50)}});
  EXPECT_EQ(CorrectedInitialAge(future, kNow, kNow), 0);
  EXPECT_EQ(CorrectedInitialAge(Make({{"age", "junk"}}), kNow, kNow), 0);
  EXPECT_EQ(CurrentAge(10, kNow, kNow + 5), 15);
  // A list in one line: the first value counts (cache-tests age-parse-suffix
  // and age-parse-prefix); of several lines, the first.
  EXPECT_EQ(CorrectedInitialAge(Make({{"age", "7200, 0"}}), kNow, kNow), 7200);
  EXPECT_EQ(CorrectedInitialAge(Make({{"age", "0, 7200"}}), kNow, kNow), 0);
  EXPECT_EQ(CorrectedInitialAge(Make({{"age", "7200"}, {"age", "0"}}), kNow, kNow), 7200);
}

TEST(Freshness, TargetedFieldReplacesCacheControlAndExpires) {
  // RFC 9213: CDN-Cache-Control's max-age, not Cache-Control's nor Expires.
  Fields res = Make({{"cache-control", "max-age=1"},
                     {"cdn-cache-control", "max-age=3600"},
                     {"date", FormatHttpDate(kNow)},
                     {"expires", FormatHttpDate(kNow + 10)}});
  CacheControl cc = ResponseCacheControl(res, {"cdn-cache-control"});
  EXPECT_TRUE(cc.targeted);
  EXPECT_EQ(FreshnessLifetime(200, res, cc, kNow, {}), 3600);
  // Without max-age in it, Expires does not give freshness either.
  Fields no_age = Make({{"cdn-cache-control", "must-revalidate"},
                        {"date", FormatHttpDate(kNow)},
                        {"expires", FormatHttpDate(kNow + 10000)}});
  CacheControl must = ResponseCacheControl(no_age, {"cdn-cache-control"});
  EXPECT_EQ(FreshnessLifetime(200, no_age, must, kNow, {}), 0);
  EXPECT_FALSE(HasExplicitFreshness(no_age, must));
  // CDN-Cache-Control: no-store wins over a fresh Cache-Control, and the
  // other way round (cache-tests cdn-no-store-cc-fresh, cdn-fresh-cc-nostore).
  Fields no_store = Make({{"cache-control", "max-age=10000"}, {"cdn-cache-control", "no-store"}});
  EXPECT_NE(WhyNotStorable("GET", Fields(), CacheControl{}, 200, no_store,
                           ResponseCacheControl(no_store, {"cdn-cache-control"})),
            nullptr);
  Fields fresh = Make({{"cache-control", "no-store"}, {"cdn-cache-control", "max-age=10000"}});
  EXPECT_EQ(WhyNotStorable("GET", Fields(), CacheControl{}, 200, fresh,
                           ResponseCacheControl(fresh, {"cdn-cache-control"})),
            nullptr);
  // Not on the target list: Cache-Control alone.
  EXPECT_TRUE(ResponseCacheControl(fresh, {}).no_store);
}

TEST(HeadUpdate, ValidatorsAndLengthMustAgree) {
  Fields stored = Make({{"etag", "\"v1\""}, {"last-modified", FormatHttpDate(kNow - 100)}});
  EXPECT_TRUE(HeadResponseMatches(stored, 5, Make({{"cache-control", "max-age=1000"}})));
  EXPECT_TRUE(HeadResponseMatches(stored, 5, Make({{"etag", "\"v1\""}, {"content-length", "5"}})));
  EXPECT_TRUE(
      HeadResponseMatches(stored, 5, Make({{"last-modified", FormatHttpDate(kNow - 100)}})));
  EXPECT_FALSE(HeadResponseMatches(stored, 5, Make({{"etag", "\"v2\""}})));
  EXPECT_FALSE(HeadResponseMatches(stored, 5, Make({{"last-modified", FormatHttpDate(kNow)}})));
  EXPECT_FALSE(HeadResponseMatches(stored, 5, Make({{"content-length", "6"}})));
  EXPECT_FALSE(HeadResponseMatches(Fields(), 5, Make({{"etag", "\"v1\""}})));
}

Verdict Eval(std::string_view response_cc, std::string_view request_cc, int64_t lifetime,
             int64_t age) {
  CacheControl res, req;
  ParseCacheControlInto(response_cc, &res);
  ParseCacheControlInto(request_cc, &req);
  StoredTimes t{.response_time = kNow, .corrected_initial_age = 0, .lifetime = lifetime};
  return Evaluate(t, res, req, kNow + age);
}

TEST(Evaluate, FreshAndStale) {
  EXPECT_EQ(Eval("max-age=60", "", 60, 10).use, Use::kFresh);
  EXPECT_EQ(Eval("max-age=60", "", 60, 10).age, 10);
  EXPECT_EQ(Eval("max-age=60", "", 60, 60).use, Use::kValidate);  // age == lifetime: stale
  EXPECT_EQ(Eval("max-age=60", "", 60, 61).staleness, 1);
}

TEST(Evaluate, NoCacheEitherSide) {
  EXPECT_EQ(Eval("no-cache, max-age=60", "", 60, 0).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60", "no-cache", 60, 0).use, Use::kValidate);
}

TEST(Evaluate, RequestMaxAgeMinFresh) {
  EXPECT_EQ(Eval("max-age=60", "max-age=5", 60, 10).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60", "max-age=10", 60, 10).use, Use::kFresh);
  EXPECT_EQ(Eval("max-age=60, immutable", "max-age=0", 60, 10).use, Use::kFresh);
  EXPECT_EQ(Eval("max-age=60", "min-fresh=55", 60, 10).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60", "min-fresh=50", 60, 10).use, Use::kFresh);
}

TEST(Evaluate, MaxStale) {
  EXPECT_EQ(Eval("max-age=60", "max-stale", 60, 1000).use, Use::kStaleAllowed);
  EXPECT_EQ(Eval("max-age=60", "max-stale=10", 60, 70).use, Use::kStaleAllowed);
  EXPECT_EQ(Eval("max-age=60", "max-stale=10", 60, 71).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60, must-revalidate", "max-stale", 60, 70).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60, proxy-revalidate", "max-stale", 60, 70).use, Use::kValidate);
  EXPECT_EQ(Eval("s-maxage=60", "max-stale", 60, 70).use, Use::kValidate);
}

TEST(Evaluate, StaleWhileRevalidate) {
  EXPECT_EQ(Eval("max-age=60, stale-while-revalidate=30", "", 60, 80).use,
            Use::kStaleWhileRevalidate);
  EXPECT_EQ(Eval("max-age=60, stale-while-revalidate=30", "", 60, 91).use, Use::kValidate);
  EXPECT_EQ(Eval("max-age=60, stale-while-revalidate=30, must-revalidate", "", 60, 80).use,
            Use::kValidate);
}

TEST(Evaluate, StaleIfError) {
  CacheControl res, req;
  ParseCacheControlInto("max-age=60, stale-if-error=100", &res);
  EXPECT_TRUE(MayServeStaleOnError(res, req, 100));
  EXPECT_FALSE(MayServeStaleOnError(res, req, 101));
  CacheControl none;
  EXPECT_FALSE(MayServeStaleOnError(none, req, 1));
  ParseCacheControlInto("stale-if-error=5", &req);
  EXPECT_TRUE(MayServeStaleOnError(none, req, 5));
  CacheControl strict;
  ParseCacheControlInto("max-age=1, stale-if-error=100, must-revalidate", &strict);
  EXPECT_FALSE(MayServeStaleOnError(strict, req, 1));
}

TEST(Validation, ConditionalFromValidators) {
  Fields stored = Make({{"etag", "\"v1\""}, {"last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"}});
  Fields req = Make({{"if-none-match", "\"client\""}, {"range", "bytes=0-1"}});
  RemoveConditionals(&req);
  EXPECT_FALSE(req.Get("range"));
  EXPECT_TRUE(AddConditionals(stored, &req));
  EXPECT_EQ(req.Get("if-none-match"), "\"v1\"");
  EXPECT_EQ(req.Get("if-modified-since"), "Sun, 06 Nov 1994 08:49:37 GMT");
  Fields none;
  EXPECT_FALSE(AddConditionals(Make({}), &none));
}

TEST(Validation, NotModifiedUpdatesStoredFields) {
  Fields stored = Make({{"etag", "\"v1\""},
                        {"content-length", "10"},
                        {"cache-control", "max-age=1"},
                        {"x-old", "kept"}});
  Fields nm = Make({{"cache-control", "max-age=100"},
                    {"content-length", "0"},
                    {"x-new", "added"},
                    {"connection", "close"}});
  Fields merged = MergeNotModified(stored, nm);
  EXPECT_EQ(merged.Get("cache-control"), "max-age=100");
  EXPECT_EQ(merged.Get("content-length"), "10");
  EXPECT_EQ(merged.Get("x-old"), "kept");
  EXPECT_EQ(merged.Get("x-new"), "added");
  EXPECT_EQ(merged.Get("etag"), "\"v1\"");
  EXPECT_FALSE(merged.Get("connection"));
  EXPECT_EQ(merged.Count("cache-control"), 1u);
}

TEST(Validation, ClientConditionals) {
  Fields stored = Make({{"etag", "W/\"v1\""}, {"last-modified", FormatHttpDate(kNow - 100)}});
  EXPECT_TRUE(ClientNotModified(Make({{"if-none-match", "\"x\", \"v1\""}}), stored));
  EXPECT_TRUE(ClientNotModified(Make({{"if-none-match", "*"}}), stored));
  EXPECT_FALSE(ClientNotModified(Make({{"if-none-match", "\"v2\""}}), stored));
  EXPECT_TRUE(ClientNotModified(Make({{"if-modified-since", FormatHttpDate(kNow - 100)}}), stored));
  EXPECT_FALSE(
      ClientNotModified(Make({{"if-modified-since", FormatHttpDate(kNow - 101)}}), stored));
  // If-None-Match decides when both are present.
  EXPECT_FALSE(ClientNotModified(
      Make({{"if-none-match", "\"v2\""}, {"if-modified-since", FormatHttpDate(kNow)}}), stored));
  EXPECT_FALSE(ClientNotModified(Make({}), stored));
}

TEST(Vary, NamesAndNormalisedValues) {
  auto names = VaryNames(Make({{"vary", "Accept-Encoding, accept-encoding"}, {"vary", "X-A"}}));
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, (std::vector<std::string>{"accept-encoding", "x-a"}));
  EXPECT_FALSE(VaryNames(Make({{"vary", "*"}})));
  EXPECT_TRUE(VaryNames(Make({}))->empty());
  EXPECT_EQ(NormalizedVaryValue(Make({{"Accept-Encoding", "gzip ,  br"}}), "accept-encoding"),
            "gzip,br");
  EXPECT_EQ(NormalizedVaryValue(Make({{"x", "a"}, {"X", " b "}}), "x"), "a,b");
  EXPECT_EQ(NormalizedVaryValue(Make({}), "x"), "");
}

TEST(Range, Forms) {
  ByteRange r;
  EXPECT_EQ(EvaluateRange("bytes=0-4", 10, &r), RangeResult::kSatisfiable);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.last, 4u);
  EXPECT_EQ(EvaluateRange("bytes=5-", 10, &r), RangeResult::kSatisfiable);
  EXPECT_EQ(r.first, 5u);
  EXPECT_EQ(r.last, 9u);
  EXPECT_EQ(EvaluateRange("bytes=-3", 10, &r), RangeResult::kSatisfiable);
  EXPECT_EQ(r.first, 7u);
  EXPECT_EQ(r.last, 9u);
  EXPECT_EQ(EvaluateRange("bytes=-30", 10, &r), RangeResult::kSatisfiable);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(EvaluateRange("bytes=8-100", 10, &r), RangeResult::kSatisfiable);
  EXPECT_EQ(r.last, 9u);
  EXPECT_EQ(EvaluateRange("bytes=10-", 10, &r), RangeResult::kUnsatisfiable);
  EXPECT_EQ(EvaluateRange("bytes=-0", 10, &r), RangeResult::kUnsatisfiable);
  EXPECT_EQ(EvaluateRange("bytes=0-1,3-4", 10, &r), RangeResult::kIgnore);
  EXPECT_EQ(EvaluateRange("items=0-1", 10, &r), RangeResult::kIgnore);
  EXPECT_EQ(EvaluateRange("bytes=5-2", 10, &r), RangeResult::kIgnore);
  EXPECT_EQ(EvaluateRange("bytes=a-2", 10, &r), RangeResult::kIgnore);
  EXPECT_EQ(EvaluateRange("bytes=", 10, &r), RangeResult::kIgnore);
}

TEST(Range, IfRange) {
  Fields stored = Make({{"etag", "\"v1\""}, {"last-modified", FormatHttpDate(kNow)}});
  EXPECT_TRUE(IfRangeHolds("\"v1\"", stored));
  EXPECT_FALSE(IfRangeHolds("\"v2\"", stored));
  EXPECT_FALSE(IfRangeHolds("W/\"v1\"", stored));
  EXPECT_TRUE(IfRangeHolds(FormatHttpDate(kNow), stored));
  EXPECT_FALSE(IfRangeHolds(FormatHttpDate(kNow - 1), stored));
  EXPECT_FALSE(IfRangeHolds("\"v1\"", Make({{"etag", "W/\"v1\""}})));
}

TEST(Invalidation, SameOriginLocations) {
  Fields res =
      Make({{"location", "/created?id=1"}, {"content-location", "http://Example.com:8080/c"}});
  auto keys = InvalidationKeys("example.com:8080", "/items", "", res);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"example.com:8080/items", "example.com:8080/created?id=1",
                                      "example.com:8080/c"}));
  Fields other = Make({{"location", "http://other.example/x"}, {"content-location", "rel"}});
  EXPECT_EQ(InvalidationKeys("a", "/p", "q=1", other), (std::vector<std::string>{"a/p?q=1"}));
  EXPECT_TRUE(IsUnsafeMethod("POST"));
  EXPECT_TRUE(IsUnsafeMethod("DELETE"));
  EXPECT_FALSE(IsUnsafeMethod("GET"));
  EXPECT_FALSE(IsUnsafeMethod("OPTIONS"));
}

TEST(Key, LowerCaseAuthority) {
  EXPECT_EQ(PrimaryKey("Example.COM", "/A", "b=C"), "example.com/A?b=C");
  EXPECT_EQ(PrimaryKey("h", "/", ""), "h/");
}

}  // namespace
}  // namespace capstan::gateway::cache
