// GrowthBook's URL targeting (`urlPatterns` of an experiment: the SDK's
// isURLTargeted) on a subset of WHATWG URLs that is parsed exactly.
//
// The SDK parses the user's URL and each "simple" pattern with `new URL`
// (a WHATWG URL parser: IDNA, IPv4 forms, percent-encoding sets, dot
// segments, backslashes, ...). Capstan has no full WHATWG parser, so
// UrlTargeted answers exactly for the inputs every GrowthBook UI produces —
// http(s) URLs and patterns written with ASCII letters, digits and
// `-._~/?#&=:*!$,;@` minus userinfo — and returns std::nullopt outside it (the evaluator then
// reports Unimplemented rather than guess):
//   * a URL or pattern holding another character (`%`, `+`, `\`, `'`,
//     space, `[`, non-ASCII, ...) or an `@`;
//   * a scheme other than http/https, or one not followed by `//`;
//   * a host whose last label is a number or starts with `0x` (IPv4
//     forms), or a label starting with `xn--` (punycode);
// Within it, what `new URL` does is done: relative input resolved against
// the SDK's bases (`https://_` for the URL, `https://_____` for a pattern),
// host lower-cased, default port dropped, `.` / `..` path segments
// resolved, an empty path made `/`, invalid input (an empty host, a bad
// port) counted as no match — as the SDK's try/catch does.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "experiments/js_value.h"

namespace capstan::experiments {

// isURLTargeted(url, targets): `targets` is the experiment's urlPatterns
// (an array of {"type": "simple" | "regex", "pattern", "include"?}).
// nullopt: outside the supported subset (see above).
std::optional<bool> UrlTargeted(std::string_view url, const Json& targets);

// A parsed URL of the subset (exposed for tests).
struct SubsetUrl {
  std::string scheme;                   // "http" or "https"
  std::string host;                     // lower-case, with ":port" unless the default
  std::string path;                     // starts with '/'
  std::optional<std::string> query;     // without '?'; nullopt: none
  std::optional<std::string> fragment;  // without '#'
  std::string Href() const;
  std::string Origin() const { return scheme + "://" + host; }
};
// `new URL(input, base)`: the URL; an error string when JavaScript throws
// (TypeError: Invalid URL); nullopt outside the subset.
struct UrlParse {
  bool supported = true;
  bool valid = false;
  SubsetUrl url;
};
UrlParse ParseSubsetUrl(std::string_view input, const SubsetUrl& base);

}  // namespace capstan::experiments
