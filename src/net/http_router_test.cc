#include "net/http_router.h"

#include "gtest/gtest.h"

namespace capstan::net {
namespace {

HttpRequest Request(std::string method, std::string path) {
  HttpRequest r;
  r.method = std::move(method);
  r.path = std::move(path);
  return r;
}

std::string FieldOf(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

class HttpRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto echo = [](std::string tag) {
      return [tag](const HttpRequest&, const PathParams& p) {
        std::string body = tag;
        for (const auto& [k, v] : p) body += " " + k + "=" + v;
        return JsonResponse(200, JsonQuote(body));
      };
    };
    router_.Add("GET", "/api/features/{clientKey}", echo("features"));
    router_.Add("POST", "/api/eval/{clientKey}", echo("eval"));
    router_.Add("GET", "/v1/{kind}", echo("list"));
    router_.Add("GET", "/v1/{kind}/{id}", echo("get"));
    router_.Add("PUT", "/v1/{kind}/{id}", echo("put"));
    router_.Add("GET", "/v1/{kind}/{id}/history", echo("history"));
    router_.Add("GET", "/boom", [](const HttpRequest&, const PathParams&) -> HttpResponse {
      throw std::runtime_error("bug");
    });
  }
  HttpRouter router_;
};

TEST_F(HttpRouterTest, MatchesMethodAndPatternWithDecodedParameters) {
  HttpResponse r = router_.Dispatch(Request("GET", "/api/features/sdk-abc"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, "\"features clientKey=sdk-abc\"\n");
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/features/a%20b")).body,
            "\"get id=a b kind=features\"\n");
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/features/x/history")).body,
            "\"history id=x kind=features\"\n");
  EXPECT_EQ(router_.Dispatch(Request("HEAD", "/v1/features")).body, "\"list kind=features\"\n");
  EXPECT_EQ(router_.Dispatch(Request("PUT", "/v1/features/x")).body,
            "\"put id=x kind=features\"\n");
}

TEST_F(HttpRouterTest, ALiteralSegmentBeatsAParameterWhateverTheOrder) {
  router_.Add("GET", "/v1/kinds",
              [](const HttpRequest&, const PathParams&) { return JsonResponse(200, "\"kinds\""); });
  router_.Add("GET", "/v1/features/{id}/history", [](const HttpRequest&, const PathParams&) {
    return JsonResponse(200, "\"feature history\"");
  });
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/kinds")).body, "\"kinds\"\n");
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/features/x/history")).body,
            "\"feature history\"\n");
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/layers/x/history")).body,
            "\"history id=x kind=layers\"\n");
}

TEST_F(HttpRouterTest, UnknownPathsAre404AndWrongMethods405WithAllow) {
  HttpResponse missing = router_.Dispatch(Request("GET", "/api/features/"));
  EXPECT_EQ(missing.status, 404);  // an empty parameter does not match
  EXPECT_NE(missing.body.find("\"code\":\"not_found\""), std::string::npos);
  EXPECT_EQ(router_.Dispatch(Request("GET", "/nope")).status, 404);
  HttpResponse wrong = router_.Dispatch(Request("DELETE", "/v1/features/x"));
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(FieldOf(wrong, "Allow"), "GET, PUT, HEAD, OPTIONS");
  EXPECT_NE(wrong.body.find("method_not_allowed"), std::string::npos);
}

TEST_F(HttpRouterTest, OptionsIsACorsPreflight) {
  HttpRequest preflight = Request("OPTIONS", "/api/eval/key");
  preflight.headers.emplace_back("Access-Control-Request-Headers", "content-type,x-capstan-user");
  HttpResponse r = router_.Dispatch(preflight);
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(FieldOf(r, "Access-Control-Allow-Methods"), "POST, OPTIONS");
  EXPECT_EQ(FieldOf(r, "Access-Control-Allow-Headers"), "content-type,x-capstan-user");
  EXPECT_EQ(router_.Dispatch(Request("OPTIONS", "/nope")).status, 404);
}

TEST_F(HttpRouterTest, BadEncodingIs400AndAThrowingHandler500) {
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/features/%zz")).status, 400);
  EXPECT_EQ(router_.Dispatch(Request("GET", "/v1/features/%4")).status, 400);
  HttpResponse boom = router_.Dispatch(Request("GET", "/boom"));
  EXPECT_EQ(boom.status, 500);
  EXPECT_NE(boom.body.find("bug"), std::string::npos);
}

TEST(JsonHelpersTest, QuoteEscapesControlCharacters) {
  EXPECT_EQ(JsonQuote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  std::string out;
  EXPECT_TRUE(PercentDecode("%41%2f+", &out));
  EXPECT_EQ(out, "A/+");
}

}  // namespace
}  // namespace capstan::net
