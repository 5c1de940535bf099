// GrowthBook's URL targeting (`urlPatterns` of an experiment: the SDK's
// isURLTargeted) on a subset of WHATWG URLs that is parsed exactly.
//
// The SDK parses the user's URL and each "simple" pattern with `new URL`
// (a WHATWG URL parser: IDNA, IPv4 forms, percent-encoding sets, dot
// segments, backslashes, ...). Capstan has no full WHATWG parser, so
// UrlTargeted answers exactly on a subset, the inputs GrowthBook's UI
// writes, and returns std::nullopt outside it (the evaluator then reports
// Unimplemented rather than guess). Outside the subset:
//   * a character other than ASCII letters, digits and `-._~/?#&=:*!$,;`
//     (a space is allowed inside, not at either end): `%`, `+`, `\`, `'`,
//     `@` (userinfo), `[`, non-ASCII, ...;
//   * a scheme other than http/https, or one not followed by `//`;
//   * a host with a space, whose last label is a number or starts with `0x`
//     (IPv4 forms), or with a label starting with `xn--` (punycode);
//   * targets that are not objects (JavaScript's coercions not followed).
// Inside it, what `new URL` does is done: relative input resolved against
// the SDK's bases (`https://_` for the URL, `https://_____` for a pattern),
// host lower-cased, default port dropped, `.` / `..` path segments
// resolved, an empty path made `/`, spaces in the path, query and fragment
// percent-encoded; invalid input (an empty host, a bad port) is no match,
// as the SDK's try/catch makes it.
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
// `new URL(input, base)`: `valid` false where JavaScript throws (TypeError:
// Invalid URL); `supported` false outside the subset.
struct UrlParse {
  bool supported = true;
  bool valid = false;
  SubsetUrl url;
};
UrlParse ParseSubsetUrl(std::string_view input, const SubsetUrl& base);

}  // namespace capstan::experiments
