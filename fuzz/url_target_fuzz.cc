// Fuzz target: the WHATWG URL parser (experiments/whatwg_url.h), URL
// targeting (url_target.h) and mergeQueryStrings (url_redirect.h). The
// input's first line is a URL, the rest a pattern. The URL is parsed alone
// and against the SDK's bases, its query as URLSearchParams; the pattern
// goes through UrlTargeted as a simple and as a regex pattern, included and
// excluded, and both through MergeQueryStrings. Invariants: no crash; a
// parsed URL's href parses back to the same href (the standard's
// serialize/parse round trip for special URLs), and so does what
// MergeQueryStrings returns when it parsed; the search parameters'
// serialization parses back to the same pairs; an excluding target targets
// a URL exactly when its including twin does not (one target each); the
// simple patterns' glob route and the SDK's regex give the same answer.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experiments/evaluator.h"
#include "experiments/url_redirect.h"
#include "experiments/url_target.h"
#include "experiments/whatwg_url.h"

namespace {

using capstan::experiments::Json;
using capstan::experiments::MergeQueryStrings;
using capstan::experiments::ParseWhatwgUrl;
using capstan::experiments::SimpleUrlPartMatches;
using capstan::experiments::Unsupported;
using capstan::experiments::UrlParseResult;
using capstan::experiments::UrlPatternBase;
using capstan::experiments::UrlSearchParams;
using capstan::experiments::UrlTargetBase;
using capstan::experiments::UrlTargeted;
using capstan::experiments::WhatwgUrl;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckRoundTrip(std::string_view input, const WhatwgUrl* base) {
  UrlParseResult first = ParseWhatwgUrl(input, base);
  if (!first.ok()) return;
  std::string href = first.url.Href();
  UrlParseResult again = ParseWhatwgUrl(href);
  Check(again.ok() && again.url.Href() == href);  // punycode hosts included
  UrlSearchParams params = UrlSearchParams::Parse(first.url.query.value_or(""));
  UrlSearchParams reparsed = UrlSearchParams::Parse(params.Serialize());
  Check(reparsed.pairs() == params.pairs());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t newline = input.find('\n');
  std::string url(input.substr(0, newline));
  std::string pattern(newline == std::string_view::npos ? "" : input.substr(newline + 1));
  CheckRoundTrip(url, nullptr);
  CheckRoundTrip(url, &UrlTargetBase());
  CheckRoundTrip(pattern, &UrlPatternBase());
  for (const char* type : {"simple", "regex"}) {
    Json include = Json::array({{{"type", type}, {"pattern", pattern}}});
    Json exclude = Json::array({{{"type", type}, {"pattern", pattern}, {"include", false}}});
    std::optional<bool> in = UrlTargeted(url, include);
    std::optional<bool> out = UrlTargeted(url, exclude);
    Check(in.has_value() == out.has_value());
    if (in.has_value()) Check(*in != *out);
  }
  // The glob route (plain ASCII) and the SDK's regex agree.
  if (url.size() <= 256 && pattern.size() <= 256) {
    for (bool is_path : {false, true}) {
      std::optional<bool> fast = SimpleUrlPartMatches(url, pattern, is_path);
      std::optional<bool> regex = SimpleUrlPartMatches(url, pattern, is_path, true);
      if (fast.has_value() && regex.has_value()) Check(*fast == *regex);
    }
  }
  try {
    Json merged = MergeQueryStrings(url, Json(pattern));
    if (merged != Json(pattern)) {
      // It parsed: an absolute URL that parses back to itself.
      UrlParseResult again = ParseWhatwgUrl(merged.get<std::string>());
      Check(again.ok() && again.url.Href() == merged.get<std::string>());
    }
  } catch (const Unsupported&) {
    // file: and non-special schemes: reported, not guessed.
  }
  return 0;
}
