// whatwg_url_probe: whatwg_url.h on stdin lines, for the differential test
// against node's `new URL` (tests/e2e/growthbook/url_differential.cjs).
//
// Each line is {"input": string, "base": string|null}; each answer one line:
// {"href", "origin", "host", "pathname", "search", "hash", "params": [[name,
// value]...], "serialized"} as the URL's getters and its searchParams give
// them, or {"failure": true} (new URL throws) or {"unsupported": true}.
#include <iostream>
#include <string>

#include "experiments/js_value.h"
#include "experiments/whatwg_url.h"

using capstan::experiments::Json;
using capstan::experiments::ParseWhatwgUrl;
using capstan::experiments::UrlParseResult;
using capstan::experiments::UrlSearchParams;

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    Json out = Json::object();
    try {
      Json request = Json::parse(line);
      UrlParseResult base;
      bool has_base = request.contains("base") && request["base"].is_string();
      if (has_base) base = ParseWhatwgUrl(request["base"].get<std::string>());
      if (has_base && !base.ok()) {
        out[base.status == UrlParseResult::kUnsupported ? "unsupported" : "failure"] = true;
      } else {
        UrlParseResult r =
            ParseWhatwgUrl(request["input"].get<std::string>(), has_base ? &base.url : nullptr);
        if (r.status == UrlParseResult::kUnsupported) {
          out["unsupported"] = true;
        } else if (!r.ok()) {
          out["failure"] = true;
        } else {
          out["href"] = r.url.Href();
          out["origin"] = r.url.Origin();
          out["host"] = r.url.Host();
          out["pathname"] = r.url.Pathname();
          out["search"] =
              r.url.query.has_value() && !r.url.query->empty() ? "?" + *r.url.query : "";
          out["hash"] = r.url.Hash();
          UrlSearchParams params = UrlSearchParams::Parse(r.url.query.value_or(""));
          out["params"] = Json::array();
          for (const auto& [name, value] : params.pairs()) {
            out["params"].push_back(Json::array({name, value}));
          }
          out["serialized"] = params.Serialize();
        }
      }
    } catch (const std::exception& e) {
      out = Json::object({{"error", e.what()}});
    }
    std::cout << out.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
  }
  return 0;
}
