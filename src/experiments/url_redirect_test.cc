#include "experiments/url_redirect.h"

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// [name, context, answer] where the answer is what the npm SDK (1.7) gives
// for {"op": "urlRedirect", "context": ...} (tests/e2e/growthbook/reference.cjs).
// The same contexts are in tests/e2e/growthbook/edge_cases.jsonl.
constexpr char kSdkAnswers[] = R"jsonl(
["redirects the user hashed into the redirect variation",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b"}]}]
["persistQueryString merges the current parameters",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing?utm=mail&lang=de","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}],"persistQueryString":true}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b?utm=mail&lang=de"}]}]
["a parameter the redirect already has is kept",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing?lang=de&x=a b","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b?lang=fr"}],"persistQueryString":true}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b?lang=fr","urlWithParams":"https://shop.example.com/landing-b?lang=fr&x=a+b"}]}]
["without persistQueryString the parameters are dropped",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing?utm=mail","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b"}]}]
["merging re-serializes the redirect's query",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing?q=%C3%A9+x","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/b?s=a%20b&t=~"}],"persistQueryString":true}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/b?s=a%20b&t=~","urlWithParams":"https://shop.example.com/b?s=a+b&t=%7E&q=%C3%A9+x"}]}]
["the first redirect experiment the user is in stops the loop",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"first","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]},{"key":"second","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b"}]}]
["a visual experiment before it is tracked too",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"visual","weights":[0.05,0.95],"variations":[{},{"css":"h1{}"}]},{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[{"inExperiment":true,"urlWithParams":"https://shop.example.com/landing-b"},{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b"}]}]
["a user the targeting excludes is not tracked",{"attributes":{"id":"7"},"url":"https://shop.example.com/other","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[]}]
["a relative current URL blocks redirects",{"attributes":{"id":"7"},"url":"/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[]}]
["an invalid redirect URL blocks the experiment",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"landing-b"}]}]},{"result":[]}]
["a redirect back onto the targeted page is skipped but tracked",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing/"}]}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing/","urlWithParams":""}]}]
["manual experiments do not run",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}],"manual":true}]},{"result":[]}]
["unknown change types are blocked",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"plain","weights":[0.05,0.95],"variations":[1,2]}]},{"result":[]}]
["the control variation is in the experiment without a redirect",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.95,0.05],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]},{"result":[{"inExperiment":true,"urlWithParams":""}]}]
["IPv4 and userinfo in the current URL",{"attributes":{"id":"7"},"url":"https://u:p@0x7f.1:8443/landing?a=1","experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"127.0.0.1:8443/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}],"persistQueryString":true}]},{"result":[{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b?a=1"}]}]
["an experiment without variations throws",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","experiments":[{"key":"broken","urlPatterns":[{"type":"simple","pattern":"*"}]}]},{"error":"Cannot read properties of undefined (reading 'some')"}]
["a prerequisite feature experiment is a tracking call too, and the first redirect experiment stops the run",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","features":{"gate":{"defaultValue":false,"rules":[{"key":"gate-exp","variations":[false,true],"weights":[0.05,0.95]}]}},"experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}],"parentConditions":[{"id":"gate","condition":{"value":true}}]},{"key":"landing","urlPatterns":[{"type":"simple","pattern":"*"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-c"}]}]},{"result":[{"inExperiment":true,"urlWithParams":"https://shop.example.com/landing-b"},{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":"https://shop.example.com/landing-b"}]}]
["a force rule tracks of remote evaluation are tracking calls",{"attributes":{"id":"7"},"url":"https://shop.example.com/landing","features":{"gate":{"defaultValue":false,"rules":[{"force":true,"tracks":[{"experiment":{"key":"remote"},"result":{"hashAttribute":"id","hashValue":"7","variationId":1,"inExperiment":true,"value":{"urlRedirect":"https://x.org/"}}}]}]}},"experiments":[{"key":"landing","urlPatterns":[{"type":"simple","pattern":"*"}],"weights":[0.05,0.95],"variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}],"parentConditions":[{"id":"gate","condition":{"value":true}}]}]},{"result":[{"inExperiment":true,"urlRedirect":"https://x.org/","urlWithParams":""},{"inExperiment":true,"urlRedirect":"https://shop.example.com/landing-b","urlWithParams":""}]}]
)jsonl";

TEST(UrlRedirectTest, AnswersAsTheSdk) {
  size_t cases = 0;
  for (absl::string_view line : absl::StrSplit(kSdkAnswers, '\n', absl::SkipEmpty())) {
    Json c = Json::parse(line.begin(), line.end());
    ++cases;
    absl::StatusOr<Json> got = UrlRedirect(c[1]);
    if (c[2].contains("error")) {
      EXPECT_FALSE(got.ok()) << c[0];
      continue;
    }
    ASSERT_TRUE(got.ok()) << c[0] << ": " << got.status();
    EXPECT_EQ(*got, c[2]["result"]) << c[0];
  }
  EXPECT_GE(cases, 18u);
}

TEST(UrlRedirectTest, MergeQueryStringsAsUtilTs) {
  // The redirect keeps its own value; the current URL's other parameters are
  // appended and the whole query re-serialized (spaces as '+').
  EXPECT_EQ(MergeQueryStrings("https://a.com/?x=1&y=a b&x=2", Json("https://b.com/p?y=2#h")),
            Json("https://b.com/p?y=2&x=1#h"));
  // Nothing to add: the redirect's query is left as written.
  EXPECT_EQ(MergeQueryStrings("https://a.com/?y=1", Json("https://b.com/p?y=%20")),
            Json("https://b.com/p?y=%20"));
  // Either URL not absolute: the redirect as given.
  EXPECT_EQ(MergeQueryStrings("/relative?x=1", Json("https://b.com/")), Json("https://b.com/"));
  EXPECT_EQ(MergeQueryStrings("https://a.com/?x=1", Json("b")), Json("b"));
  // A non-string redirect goes through String().
  EXPECT_EQ(MergeQueryStrings("https://a.com/?x=1", Json::array({"https://b.com/"})),
            Json("https://b.com/?x=1"));
}

TEST(UrlRedirectTest, ErrorsWhereTheSdkThrows) {
  auto error = [](const char* context) { return UrlRedirect(Json::parse(context)).status(); };
  EXPECT_EQ(error(R"({"experiments": {"a": 1}})").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error(R"({"experiments": [null]})").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error(R"({"experiments": [{"key": "k"}]})").code(), absl::StatusCode::kInvalidArgument);
  // A URL outside whatwg_url.h (a non-special scheme) is not guessed at; an
  // internationalized host is parsed (idna.h).
  auto context = [](const char* url) {
    return Json::parse(std::string(R"({"url": ")") + url + R"(", "attributes": {"id": "1"},
      "experiments": [{"key": "k", "urlPatterns": [{"type": "simple", "pattern": "*"}],
                       "variations": [{}, {"urlRedirect": "https://a.com/"}]}]})");
  };
  EXPECT_EQ(UrlRedirect(context("h+x://a/")).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(UrlRedirect(context("https://\\u0441\\u0430\\u0439\\u0442.\\u0440\\u0444/")).ok());
  EXPECT_TRUE(UrlRedirect(Json::parse(R"({"experiments": []})"))->empty());
}

}  // namespace
}  // namespace capstan::experiments
