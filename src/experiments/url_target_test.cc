#include "experiments/url_target.h"

#include "experiments/js_regex.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// [url, urlPatterns, isURLTargeted] as the npm SDK (1.7) answers them
// (computed with node and @growthbook/growthbook's exported isURLTargeted).
constexpr char kSdkAnswers[] =
    R"jsonl(["https://www.example.com/pricing",[{"type":"simple","pattern":"https://www.example.com/pricing"}],true]
["https://www.example.com/pricing/",[{"type":"simple","pattern":"https://www.example.com/pricing"}],true]
["https://WWW.Example.com/Pricing",[{"type":"simple","pattern":"www.example.com/pricing"}],true]
["http://www.example.com/pricing",[{"type":"simple","pattern":"https://www.example.com/pricing"}],true]
["https://www.example.com/pricing?x=1",[{"type":"simple","pattern":"https://www.example.com/pricing"}],true]
["https://www.example.com/pricing?x=2",[{"type":"simple","pattern":"https://www.example.com/pricing?x=1"}],false]
["https://www.example.com/pricing?y=3&x=1",[{"type":"simple","pattern":"https://www.example.com/pricing?x=1"}],true]
["https://www.example.com/pricing",[{"type":"simple","pattern":"https://www.example.com/pricing?x="}],true]
["https://shop.example.com/a/b/c",[{"type":"simple","pattern":"https://*.example.com/a/*"}],true]
["https://example.com/a/b/c",[{"type":"simple","pattern":"https://*.example.com/a/*"}],false]
["https://example.com/a/b",[{"type":"simple","pattern":"/a/b"}],true]
["https://other.org/a/b",[{"type":"simple","pattern":"/a/b"}],true]
["https://other.org/a/b",[{"type":"simple","pattern":"a"}],false]
["https://other.org/a",[{"type":"simple","pattern":"a"}],true]
["https://example.com:8080/x",[{"type":"simple","pattern":"example.com/x"}],false]
["https://example.com:8080/x",[{"type":"simple","pattern":"example.com:8080/x"}],true]
["https://example.com:443/x",[{"type":"simple","pattern":"example.com/x"}],true]
["https://example.com/x#top",[{"type":"simple","pattern":"example.com/x#top"}],true]
["https://example.com/x#bottom",[{"type":"simple","pattern":"example.com/x#top"}],false]
["https://example.com/x",[{"type":"simple","pattern":"example.com/x#top"}],false]
["https://example.com/a/../b",[{"type":"simple","pattern":"example.com/b"}],true]
["https://example.com/a/./b/.",[{"type":"simple","pattern":"example.com/a/b/"}],true]
["https://example.com/",[{"type":"simple","pattern":""}],true]
["https://example.com/x",[{"type":"simple","pattern":""}],false]
["/checkout?step=2",[{"type":"simple","pattern":"/checkout?step=*"}],true]
["/checkout",[{"type":"simple","pattern":"/checkout?step=*"}],true]
["",[{"type":"simple","pattern":"/"}],true]
["https://example.com/admin",[{"type":"simple","pattern":"example.com/*"},{"type":"simple","pattern":"example.com/admin","include":false}],false]
["https://example.com/home",[{"type":"simple","pattern":"example.com/*"},{"type":"simple","pattern":"example.com/admin","include":false}],true]
["https://example.com/home",[{"type":"simple","pattern":"example.com/admin","include":false}],true]
["https://example.com/admin",[{"type":"simple","pattern":"example.com/admin","include":false}],false]
["https://example.com/p/123",[{"type":"regex","pattern":"^https://example\\.com/p/\\d+$"}],true]
["https://example.com/p/123",[{"type":"regex","pattern":"^/p/\\d+$"}],true]
["https://example.com/p/abc",[{"type":"regex","pattern":"^/p/\\d+$"}],false]
["https://example.com/p/123",[{"type":"regex","pattern":"(["}],false]
["https://example.com/p/123",[{"type":"regex","pattern":"example.com/p"}],true]
["https://example.com/a b?q=x y#f g",[{"type":"simple","pattern":"example.com/a b?q=x y"}],true]
["https://example.com/a_____b",[{"type":"simple","pattern":"example.com/a*b"}],true]
["https://example.com/x",[{"type":"simple","pattern":"https://"}],false]
["https://example.com/x",[{"type":"simple","pattern":"example.com:99999/x"}],false]
["https://example.com/x",[{"type":"other","pattern":"x"}],false]
["https://example.com/x",[],false]
["https://example.com/x",[{"type":"simple","pattern":"https:///example.com/x"}],true]
["//example.com/x",[{"type":"simple","pattern":"example.com/x"}],true]
["https://a.com/?a=1&a=2",[{"type":"simple","pattern":"a.com/?a=2"}],false]
["https://a.com/?a=1&a=2",[{"type":"simple","pattern":"a.com/?a=1"}],true]
["https://a.com/?a",[{"type":"simple","pattern":"a.com/?a="}],true]
["https://a.com/x/",[{"type":"simple","pattern":"a.com/x//"}],true]
["https://a.com/x",[{"type":"simple","pattern":"a.com//x"}],true]
["https://u:p@example.com/pricing",[{"type":"simple","pattern":"example.com/pricing"}],true]
["https://u:p@example.com/pricing",[{"type":"regex","pattern":"^https://u:p@example\\.com/pricing$"}],true]
["https://u:p@example.com/pricing",[{"type":"regex","pattern":"^/pricing$"}],false]
["http://0x7f.1:8080/a",[{"type":"simple","pattern":"127.0.0.1:8080/a"}],true]
["https://10.0.0.1/a",[{"type":"simple","pattern":"10.0.0.1/*"}],true]
["https://[::1]:8443/a",[{"type":"simple","pattern":"https://[::1]:8443/a"}],true]
["https://example.com/caf%C3%A9",[{"type":"simple","pattern":"example.com/café"}],true]
["https://example.com/x?q=%C3%A9t%C3%A9",[{"type":"simple","pattern":"*?q=ÉTÉ"}],true]
["https://example.com/x?q=a%0Ab",[{"type":"simple","pattern":"*?q=a*b"}],false]
["https://example.com/x?q=a%0Ab",[{"type":"simple","pattern":"*?q=a%0A*"}],true]
["https://example.com/x?q=a+b",[{"type":"simple","pattern":"*?q=a b"}],true]
["https:\\\\example.com\\a\\b",[{"type":"simple","pattern":"example.com/a/b"}],true]
["https://example.com/(a)+[b]",[{"type":"simple","pattern":"example.com/(a)+[b]"}],true]
["https://example.com/a.b",[{"type":"simple","pattern":"example.com/a?b"}],false]
["https://example.com/%2e%2E/pricing",[{"type":"simple","pattern":"example.com/pricing"}],true]
["https://example.com/%41",[{"type":"simple","pattern":"example.com/A"}],false]
["https://example.com/%41",[{"type":"simple","pattern":"example.com/%41"}],true]
["https://EXAMPLE.com./pricing",[{"type":"simple","pattern":"example.com./pricing"}],true]
["  https://example.com/pricing\n",[{"type":"simple","pattern":"example.com/pricing"}],true]
["https://example.com/p",[5,"x",{"type":"simple","pattern":"*"}],true]
["https://example.com/p",[{"type":"simple","pattern":5}],false]
["https://example.com/p",[{"type":"regex"}],false]
["https://example.com/p","abc",false]
["https://example.com:99999/p",[{"type":"simple","pattern":"*"}],false]
["https://example.com/a//b",[{"type":"regex","pattern":"a//b"}],true]
["ws://example.com/p",[{"type":"simple","pattern":"example.com/p"}],true]
["https://example.com/x?q=%E2%80%A8",[{"type":"simple","pattern":"*?q=*"}],false]
)jsonl";

TEST(UrlTargetTest, AnswersAsTheSdkOnHandWrittenCases) {
  size_t start = 0, cases = 0;
  std::string_view all = kSdkAnswers;
  while (start < all.size()) {
    size_t end = all.find('\n', start);
    Json c = Json::parse(all.substr(start, end - start));
    start = end + 1;
    ++cases;
    std::optional<bool> got = UrlTargeted(c[0].get<std::string>(), c[1]);
    ASSERT_TRUE(got.has_value()) << c.dump();
    EXPECT_EQ(*got, c[2].get<bool>()) << c.dump();
  }
  EXPECT_GE(cases, 75u);
}

TEST(UrlTargetTest, UnimplementedOnlyWhereTheParserIs) {
  Json any = Json::parse(R"([{"type": "simple", "pattern": "*"}])");
  // Non-special schemes, in the URL or in a simple pattern; internationalized
  // hosts are parsed (idna.h).
  EXPECT_TRUE(UrlTargeted("https://\xd1\x80\xd1\x84.\xd1\x80\xd1\x84/", any).value());
  EXPECT_TRUE(
      UrlTargeted(
          "https://xn--p1ai.xn--p1ai/",
          Json::parse(R"([{"type": "simple", "pattern": "https://\u0440\u0444.\u0440\u0444"}])"))
          .value());
  EXPECT_FALSE(UrlTargeted("mailto:a@b.c", any).has_value());
  EXPECT_FALSE(
      UrlTargeted("https://a.com/", Json::parse(R"([{"type": "simple", "pattern": "h+x://a/"}])"))
          .has_value());
  // An array-like object would be read through its `length`.
  EXPECT_FALSE(UrlTargeted("https://a.com/", Json::parse(R"({"length": 1})")).has_value());
  // Past JsRegex's subject limit: a non-ASCII query value compared by a
  // simple pattern, an href tested by a regex. Plain ASCII parts take the
  // glob route, which has no limit.
  std::string long_path = "https://a.com/" + std::string(JsRegex::kMaxSubjectBytes, 'a');
  EXPECT_TRUE(UrlTargeted(long_path, any).value());
  EXPECT_FALSE(
      UrlTargeted(long_path, Json::parse(R"([{"type": "regex", "pattern": "^h"}])")).has_value());
  std::string long_query = "https://a.com/?q=";
  for (size_t i = 0; i < JsRegex::kMaxSubjectBytes / 2 + 1; ++i) long_query += "\xc3\xa9";
  EXPECT_FALSE(UrlTargeted(long_query, Json::parse(R"([{"type": "simple", "pattern": "*?q=*"}])"))
                   .has_value());
  // What used to be outside the subset is answered.
  EXPECT_TRUE(UrlTargeted("https://10.0.0.1/%41", any).value());
  // A null target throws, as `targets[i].type` does.
  EXPECT_THROW(UrlTargeted("https://a.com/", Json::parse("[null]")), JsTypeError);
}

TEST(UrlTargetTest, GlobRouteAgreesWithTheSdksRegex) {
  // Plain ASCII parts skip the regex; the SDK's regex (the other route)
  // must give the same answer on them.
  const char* subjects[] = {"",      "/",     "//",        "/a/b/", "/A/b", "a.b",   "a_b",
                            "ab",    "/a/_b", "x?y*z",     "#top",  "#",    "a%2Fb", "/(",
                            "[::1]", "a..b",  "www.A.com", "/a//",  "_____"};
  const char* patterns[] = {"",       "/",           "//",    "/a/b",    "a/b/",          "_____",
                            "a_____", "_____b/",     "/A/B/", "a._____", "x?y*z",         "#top",
                            "#TOP",   "_____/_____", "(",     "[::1]",   "a_____._____b", "______"};
  size_t compared = 0;
  for (const char* subject : subjects) {
    for (const char* pattern : patterns) {
      for (bool is_path : {false, true}) {
        std::optional<bool> glob = SimpleUrlPartMatches(subject, pattern, is_path);
        std::optional<bool> regex = SimpleUrlPartMatches(subject, pattern, is_path, true);
        ASSERT_TRUE(glob.has_value() && regex.has_value());
        EXPECT_EQ(*glob, *regex) << subject << " vs " << pattern << " path " << is_path;
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 19u * 18u * 2u);
  // A line terminator in the subject stops a wildcard (regex route).
  EXPECT_FALSE(SimpleUrlPartMatches("a\nb", "a_____", false).value());
  EXPECT_TRUE(SimpleUrlPartMatches("a\nb", "a\n_____", false).value());
}

}  // namespace
}  // namespace capstan::experiments
