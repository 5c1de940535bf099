#include "experiments/console_assets.h"

#include <string>
#include <utility>

namespace capstan::experiments {
namespace {

constexpr std::string_view kIndex = "index.html";

// Only the console's own files run; inline styles are allowed because the
// chart library (uPlot) positions its elements with style attributes.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// esbuild names bundled files "<name>-<HASH>.<ext>" (8 characters of
// [A-Z0-9]): their bytes never change under that name.
bool IsContentHashed(std::string_view name) {
  size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot < 9) return false;
  std::string_view stem = name.substr(0, dot);
  if (stem[stem.size() - 9] != '-') return false;
  for (char c : stem.substr(stem.size() - 8)) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

// True when If-None-Match lists `etag` (or is "*"); weak tags compare weakly.
bool NoneMatchHits(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    size_t comma = header.find(',');
    std::string_view tag = header.substr(0, comma);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string_view ConsoleContentType(std::string_view name) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
      {".woff2", "font/woff2"},
  };
  for (const auto& [extension, type] : kTypes) {
    if (EndsWith(name, extension)) return type;
  }
  return "application/octet-stream";
}

net::HttpResponse ServeConsoleAsset(const net::HttpRequest& request, std::string_view name) {
  if (name.empty()) name = kIndex;
  const ConsoleAsset* found = nullptr;
  for (const ConsoleAsset& asset : ConsoleAssets()) {
    if (asset.name == name) {
      found = &asset;
      break;
    }
  }
  if (found == nullptr) {
    return net::JsonError(404, "not_found",
                          std::string("the console has no file \"") + std::string(name) + "\"");
  }
  net::HttpResponse response{.content_type = std::string(ConsoleContentType(name))};
  response.headers.emplace_back("ETag", std::string(found->etag));
  response.headers.emplace_back(
      "Cache-Control", IsContentHashed(name) ? "public, max-age=31536000, immutable" : "no-cache");
  response.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (name == kIndex) {
    response.headers.emplace_back("Content-Security-Policy", std::string(kContentSecurityPolicy));
    response.headers.emplace_back("Referrer-Policy", "no-referrer");
  }
  std::optional<std::string_view> if_none_match = request.Header("If-None-Match");
  if (if_none_match.has_value() && NoneMatchHits(*if_none_match, found->etag)) {
    response.status = 304;
    return response;
  }
  response.body = std::string(found->body);
  return response;
}

void AddConsoleRoutes(net::HttpRouter* router) {
  auto index = [](const net::HttpRequest& r, const net::PathParams&) {
    return ServeConsoleAsset(r, "");
  };
  router->Add("GET", "/console", index);
  router->Add("GET", "/console/", index);
  router->Add("GET", "/console/{file}", [](const net::HttpRequest& r, const net::PathParams& p) {
    return ServeConsoleAsset(r, p.at("file"));
  });
}

}  // namespace capstan::experiments
