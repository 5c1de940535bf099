#include "experiments/url_target.h"

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
  EXPECT_GE(cases, 40u);
}

TEST(UrlTargetTest, ParsesTheSubsetAsNewUrlDoes) {
  SubsetUrl base{"https", "_", "/", std::nullopt, std::nullopt};
  auto href = [&](std::string_view input) {
    UrlParse p = ParseSubsetUrl(input, base);
    if (!p.supported) return std::string("(unsupported)");
    return p.valid ? p.url.Href() : std::string("(invalid)");
  };
  EXPECT_EQ(href("HTTPS://Example.COM:443"), "https://example.com/");
  EXPECT_EQ(href("http://example.com:80/a"), "http://example.com/a");
  EXPECT_EQ(href("http://example.com:0080/a"), "http://example.com/a");
  EXPECT_EQ(href("https://example.com:8443?x#y"), "https://example.com:8443/?x#y");
  EXPECT_EQ(href("https://example.com/a/b/../../c/./d/.."), "https://example.com/c/");
  EXPECT_EQ(href("https://example.com/a b?c d#e f"), "https://example.com/a%20b?c%20d#e%20f");
  EXPECT_EQ(href("?q"), "https://_/?q");
  EXPECT_EQ(href("#f"), "https://_/#f");
  EXPECT_EQ(href(""), "https://_/");
  EXPECT_EQ(href("a/b"), "https://_/a/b");
  EXPECT_EQ(href("//h.com"), "https://h.com/");
  EXPECT_EQ(href("https://?x"), "(invalid)");
  EXPECT_EQ(href("https://a.com:x/"), "(invalid)");
  EXPECT_EQ(href("https://a.com:65536/"), "(invalid)");
  // Outside the subset: said so, never guessed.
  EXPECT_EQ(href("https://10.0.0.1/"), "(unsupported)");
  EXPECT_EQ(href("https://0x7f/"), "(unsupported)");
  EXPECT_EQ(href("https://xn--bcher-kva.de/"), "(unsupported)");
  EXPECT_EQ(href("https://a.com/%41"), "(unsupported)");
  EXPECT_EQ(href("https://user@a.com/"), "(unsupported)");
  EXPECT_EQ(href("ftp://a.com/"), "(unsupported)");
  EXPECT_EQ(href("https:a.com"), "(unsupported)");
  EXPECT_EQ(href("https://a.com/\\x"), "(unsupported)");
  EXPECT_EQ(href(" https://a.com/"), "(unsupported)");
  EXPECT_EQ(href("https://b\xc3\xbc" "cher.de/"), "(unsupported)");
  EXPECT_FALSE(
      UrlTargeted("https://a.com/%41", Json::parse(R"([{"type": "simple", "pattern": "a.com"}])"))
          .has_value());
}

}  // namespace
}  // namespace capstan::experiments
