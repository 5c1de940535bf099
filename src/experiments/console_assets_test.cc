#include "experiments/console_assets.h"

#include <string>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

std::string HeaderOf(const net::HttpResponse& response, std::string_view name) {
  for (const auto& [key, value] : response.headers) {
    if (key == name) return value;
  }
  return "";
}

net::HttpResponse Get(const net::HttpRouter& router, std::string path,
                      std::string if_none_match = "") {
  net::HttpRequest request{.method = "GET", .path = std::move(path)};
  if (!if_none_match.empty()) request.headers.emplace_back("If-None-Match", if_none_match);
  return router.Dispatch(request);
}

// The names index.html refers to ("/console/console-XXXX.js").
std::string BundleName(const std::string& index, std::string_view extension) {
  size_t end = index.find(std::string(extension) + "\"");
  if (end == std::string::npos) return "";
  size_t start = index.rfind("/console/", end);
  return index.substr(start + 9, end + extension.size() - start - 9);
}

TEST(ConsoleAssetsTest, ContentTypes) {
  EXPECT_EQ(ConsoleContentType("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(ConsoleContentType("console-ABCDEFGH.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(ConsoleContentType("console-ABCDEFGH.css"), "text/css; charset=utf-8");
  EXPECT_EQ(ConsoleContentType("logo.svg"), "image/svg+xml");
  EXPECT_EQ(ConsoleContentType("blob"), "application/octet-stream");
}

TEST(ConsoleAssetsTest, IndexAtEverySpellingOfTheRoot) {
  net::HttpRouter router;
  AddConsoleRoutes(&router);
  for (const char* path : {"/console", "/console/", "/console/index.html"}) {
    net::HttpResponse response = Get(router, path);
    EXPECT_EQ(response.status, 200) << path;
    EXPECT_EQ(response.content_type, "text/html; charset=utf-8") << path;
    EXPECT_NE(response.body.find("<html"), std::string::npos) << path;
    EXPECT_EQ(HeaderOf(response, "Cache-Control"), "no-cache") << path;
    EXPECT_NE(HeaderOf(response, "Content-Security-Policy").find("script-src 'self'"),
              std::string::npos);
    EXPECT_EQ(HeaderOf(response, "X-Content-Type-Options"), "nosniff");
  }
}

TEST(ConsoleAssetsTest, EtagAnd304) {
  net::HttpRouter router;
  AddConsoleRoutes(&router);
  net::HttpResponse first = Get(router, "/console/");
  std::string etag = HeaderOf(first, "ETag");
  ASSERT_GE(etag.size(), 3u);
  EXPECT_EQ(etag.front(), '"');
  EXPECT_EQ(etag.back(), '"');

  net::HttpResponse again = Get(router, "/console/", etag);
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  EXPECT_EQ(HeaderOf(again, "ETag"), etag);
  // In a list, weak, or "*": still a match.
  EXPECT_EQ(Get(router, "/console/", "\"other\", W/" + etag).status, 304);
  EXPECT_EQ(Get(router, "/console/", "*").status, 304);
  // Another tag: the whole file again.
  net::HttpResponse other = Get(router, "/console/", "\"stale\"");
  EXPECT_EQ(other.status, 200);
  EXPECT_EQ(other.body, first.body);
}

TEST(ConsoleAssetsTest, BundleIsImmutableUnderItsHashedName) {
  if (!ConsoleAssetsBuilt()) GTEST_SKIP() << "the console was not built (no npm at build time)";
  net::HttpRouter router;
  AddConsoleRoutes(&router);
  std::string index = Get(router, "/console/").body;
  for (std::string_view extension : {".js", ".css"}) {
    std::string name = BundleName(index, extension);
    ASSERT_FALSE(name.empty()) << "index.html names no " << extension << ":\n" << index;
    net::HttpResponse response = Get(router, "/console/" + name);
    EXPECT_EQ(response.status, 200) << name;
    EXPECT_EQ(response.content_type, ConsoleContentType(name));
    EXPECT_FALSE(response.body.empty());
    EXPECT_EQ(HeaderOf(response, "Cache-Control"), "public, max-age=31536000, immutable");
    EXPECT_EQ(Get(router, "/console/" + name, HeaderOf(response, "ETag")).status, 304);
  }
  // Distinct files have distinct tags.
  EXPECT_NE(HeaderOf(Get(router, "/console/" + BundleName(index, ".js")), "ETag"),
            HeaderOf(Get(router, "/console/" + BundleName(index, ".css")), "ETag"));
}

TEST(ConsoleAssetsTest, UnknownFileIs404AndOtherMethods405) {
  net::HttpRouter router;
  AddConsoleRoutes(&router);
  EXPECT_EQ(Get(router, "/console/nope.js").status, 404);
  EXPECT_EQ(router.Dispatch({.method = "POST", .path = "/console/"}).status, 405);
  // HEAD is answered like GET (the server drops the body).
  EXPECT_EQ(router.Dispatch({.method = "HEAD", .path = "/console/"}).status, 200);
}

}  // namespace
}  // namespace capstan::experiments
