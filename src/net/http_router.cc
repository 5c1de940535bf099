#include "net/http_router.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace capstan::net {
namespace {

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> segments;
  if (path.empty() || path.front() != '/') return segments;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

bool IsParameter(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int high = HexValue(in[i + 1]), low = HexValue(in[i + 2]);
    if (high < 0 || low < 0) return false;
    out->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

std::string JsonQuote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

HttpResponse JsonResponse(int status, std::string json) {
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  response.body = std::move(json);
  response.body += '\n';
  return response;
}

HttpResponse JsonError(int status, std::string_view code, std::string_view message) {
  return JsonResponse(status, absl::StrCat("{\"error\":{\"code\":", JsonQuote(code),
                                           ",\"message\":", JsonQuote(message), "}}"));
}

bool HttpRouter::MoreSpecific(const Route& a, const Route& b) {
  for (size_t i = 0; i < a.segments.size() && i < b.segments.size(); ++i) {
    bool a_literal = !IsParameter(a.segments[i]), b_literal = !IsParameter(b.segments[i]);
    if (a_literal != b_literal) return a_literal;
  }
  return false;
}

void HttpRouter::Add(std::string_view method, std::string_view pattern, Handler handler) {
  Route route;
  route.method = std::string(method);
  for (std::string_view segment : SplitPath(pattern)) route.segments.emplace_back(segment);
  route.handler = std::move(handler);
  routes_.push_back(std::move(route));
}

bool HttpRouter::Match(const Route& route, const std::vector<std::string_view>& segments,
                       PathParams* params, bool* bad_encoding) {
  if (route.segments.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& want = route.segments[i];
    if (!IsParameter(want)) {
      if (want != segments[i]) return false;
      continue;
    }
    if (segments[i].empty()) return false;
    std::string decoded;
    if (!PercentDecode(segments[i], &decoded)) {
      *bad_encoding = true;
      return false;
    }
    params->insert_or_assign(want.substr(1, want.size() - 2), std::move(decoded));
  }
  return true;
}

HttpResponse HttpRouter::Dispatch(const HttpRequest& request) const {
  std::vector<std::string_view> segments = SplitPath(request.path);
  std::string_view method = request.method;
  if (method == "HEAD") method = "GET";
  std::vector<std::string> allowed;
  bool bad_encoding = false;
  const Route* best = nullptr;
  PathParams best_params;
  for (const Route& route : routes_) {
    PathParams params;
    if (!Match(route, segments, &params, &bad_encoding)) continue;
    if (route.method != method) {
      allowed.push_back(route.method);
      continue;
    }
    // The most specific pattern wins: a literal segment beats a parameter at
    // the first place they differ ("/v1/layers-count" over "/v1/{kind}"),
    // whatever order they were added in.
    if (best == nullptr || MoreSpecific(route, *best)) {
      best = &route;
      best_params = std::move(params);
    }
  }
  if (best != nullptr) {
    try {
      return best->handler(request, best_params);
    } catch (const std::exception& e) {
      // A handler's bug answers this request, not the process.
      return JsonError(500, "internal", e.what());
    }
  }
  if (bad_encoding) return JsonError(400, "bad_path", "invalid percent-encoding in the path");
  if (allowed.empty()) {
    return JsonError(404, "not_found",
                     absl::StrCat("no such endpoint: ", request.method, " ", request.path));
  }
  if (std::find(allowed.begin(), allowed.end(), "GET") != allowed.end()) allowed.push_back("HEAD");
  allowed.push_back("OPTIONS");
  std::string allow = absl::StrJoin(allowed, ", ");
  if (request.method == "OPTIONS") {
    // A browser's CORS preflight before a cross-origin call.
    HttpResponse preflight;
    preflight.status = 204;
    preflight.headers.emplace_back("Allow", allow);
    preflight.headers.emplace_back("Access-Control-Allow-Methods", allow);
    std::string requested(
        request.Header("Access-Control-Request-Headers").value_or("Content-Type"));
    preflight.headers.emplace_back("Access-Control-Allow-Headers", requested);
    preflight.headers.emplace_back("Access-Control-Max-Age", "86400");
    return preflight;
  }
  HttpResponse refused = JsonError(
      405, "method_not_allowed",
      absl::StrCat(request.method, " is not allowed on ", request.path, " (allowed: ", allow, ")"));
  refused.headers.emplace_back("Allow", allow);
  return refused;
}

}  // namespace capstan::net
