// Fuzz target: URL targeting (experiments/url_target.h). The input's first
// line is a URL, the rest a pattern; both go through ParseSubsetUrl (against
// the SDK's bases) and UrlTargeted as a simple and as a regex pattern,
// included and excluded. Invariants: no crash; a parsed URL's href parses
// back (when inside the subset) to the same href; an excluding target never
// targets a URL its including twin does not (with one target each).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experiments/url_target.h"

namespace {

using capstan::experiments::Json;
using capstan::experiments::ParseSubsetUrl;
using capstan::experiments::SubsetUrl;
using capstan::experiments::UrlParse;
using capstan::experiments::UrlTargeted;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckRoundTrip(std::string_view input, const SubsetUrl& base) {
  UrlParse first = ParseSubsetUrl(input, base);
  if (!first.supported || !first.valid) return;
  std::string href = first.url.Href();
  UrlParse again = ParseSubsetUrl(href, base);
  if (again.supported) Check(again.valid && again.url.Href() == href);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t newline = input.find('\n');
  std::string_view url = input.substr(0, newline);
  std::string pattern(newline == std::string_view::npos ? "" : input.substr(newline + 1));
  const SubsetUrl url_base{"https", "_", "/", std::nullopt, std::nullopt};
  const SubsetUrl pattern_base{"https", "_____", "/", std::nullopt, std::nullopt};
  CheckRoundTrip(url, url_base);
  CheckRoundTrip(pattern, pattern_base);
  for (const char* type : {"simple", "regex"}) {
    Json include = Json::array({{{"type", type}, {"pattern", pattern}}});
    Json exclude = Json::array({{{"type", type}, {"pattern", pattern}, {"include", false}}});
    std::optional<bool> in = UrlTargeted(url, include);
    std::optional<bool> out = UrlTargeted(url, exclude);
    Check(in.has_value() == out.has_value());
    // One excluding target: targeted exactly when the including one is not.
    if (in.has_value()) Check(*in != *out);
  }
  return 0;
}
