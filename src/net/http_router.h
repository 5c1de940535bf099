// HttpRouter: method and path-pattern dispatch for a small JSON service on
// HttpServer::HandleAll (http_server.h). Patterns are literal segments and
// `{name}` parameters ("/v1/{kind}/{id}"); a parameter matches one whole,
// non-empty segment and reaches the handler percent-decoded. What the router
// answers itself, with JSON bodies ({"error": {"code", "message"}}):
//   404 not_found           no pattern matches the path
//   405 method_not_allowed  a pattern matches but not for this method (Allow: lists them)
//   400 bad_path            a parameter's percent-encoding is invalid
//   204 to OPTIONS          a CORS preflight: Access-Control-Allow-Methods / -Headers / -Max-Age
//                           (the server's default_headers add Access-Control-Allow-Origin)
// HEAD is answered by the GET route (the server sends no body).
//
// Thread-safety: Add before serving; Dispatch from any number of threads.
//
//   net::HttpRouter router;
//   router.Add("GET", "/v1/features/{key}", [&](const net::HttpRequest& r, const net::PathParams&
//   p) {
//     return net::JsonResponse(200, Lookup(p.at("key")));
//   });
//   server.HandleAll([&](const net::HttpRequest& r) { return router.Dispatch(r); });
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "net/http_server.h"

namespace capstan::net {

using PathParams = std::map<std::string, std::string, std::less<>>;

class HttpRouter {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&, const PathParams&)>;

  // REQUIRES: `pattern` starts with '/'; added before Dispatch runs.
  void Add(std::string_view method, std::string_view pattern, Handler handler);
  HttpResponse Dispatch(const HttpRequest& request) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;  // "{name}" for a parameter
    Handler handler;
  };
  // True when `segments` (the request path's, still encoded) fit the route;
  // fills `params` (decoded) or sets *bad_encoding.
  static bool Match(const Route& route, const std::vector<std::string_view>& segments,
                    PathParams* params, bool* bad_encoding);
  // True when `a` has a literal segment where `b` first has a parameter.
  static bool MoreSpecific(const Route& a, const Route& b);
  std::vector<Route> routes_;
};

// A JSON answer: `json` is sent as is (application/json).
HttpResponse JsonResponse(int status, std::string json);
// {"error": {"code": code, "message": message}} with `status`.
HttpResponse JsonError(int status, std::string_view code, std::string_view message);
// `text` as a JSON string literal, quotes included.
std::string JsonQuote(std::string_view text);
// Decodes %XX escapes (not '+': paths are not form data); false on a bad escape.
bool PercentDecode(std::string_view in, std::string* out);

}  // namespace capstan::net
