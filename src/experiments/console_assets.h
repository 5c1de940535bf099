// The web console (console/ at the top of the tree) served at /console by
// the experiments service. Its files are bundled at build time (npm + esbuild)
// and embedded into the binary as byte arrays (console_assets_data.cc, which
// console/embed.mjs generates; CMake regenerates it when console/ changes).
//
//   GET /console, /console/          index.html   Cache-Control: no-cache
//   GET /console/{file}              a bundled file; names with a content hash
//                                    ("console-3F2A….js") are immutable
//                                    (max-age one year), others no-cache
// Every answer has a strong ETag (a hash of the bytes) and honours
// If-None-Match with 304; X-Content-Type-Options: nosniff; index.html gets a
// Content-Security-Policy that allows only the console's own scripts.
//
// Thread-safety: the assets are constants; the handlers run on any thread.
#pragma once

#include <span>
#include <string_view>

#include "net/http_router.h"

namespace capstan::experiments {

struct ConsoleAsset {
  std::string_view name;  // "index.html", "console-<hash>.js", ...
  std::string_view body;
  std::string_view etag;  // quoted, strong: "\"<hex>\""
};

// The embedded files (generated). Empty names never appear.
std::span<const ConsoleAsset> ConsoleAssets();
// True when the bundle was built; false when npm was missing at build time
// and the assets are a page saying so.
bool ConsoleAssetsBuilt();

// "text/javascript; charset=utf-8" for "x.js", ...; application/octet-stream
// for an unknown extension.
std::string_view ConsoleContentType(std::string_view name);

// The answer for `name` ("" is index.html) to `request` (If-None-Match).
net::HttpResponse ServeConsoleAsset(const net::HttpRequest& request, std::string_view name);

// Adds GET /console, /console/ and /console/{file} to `router`.
void AddConsoleRoutes(net::HttpRouter* router);

}  // namespace capstan::experiments
