// The WHATWG URL Standard's parser (`new URL(input, base)`) and
// URLSearchParams, as far as GrowthBook's URL targeting and redirects need
// them: URLs of the special schemes http, https, ws, wss and ftp.
//
// What is done as the standard does: leading and trailing C0 controls and
// spaces stripped, tabs and newlines removed; a scheme lower-cased; input
// resolved against a base (relative paths, `//host`, `?query`, `#fragment`,
// `https:path` against an https base); backslashes as slashes; userinfo
// (percent-encoded, kept in the href); hosts percent-decoded, lower-cased,
// checked for forbidden code points, IPv4 in every form the standard takes
// (`0x7f.1`, `017.0.0.1`, `2130706433`) and IPv6 (compressed, embedded IPv4)
// serialized canonically; ports checked and the scheme's default dropped;
// `.`/`..` path segments (also as `%2e`) resolved; each component
// percent-encoded with its own encode set, non-ASCII as UTF-8.
//
// Internationalized hosts: IDNA (UTS #46 ToASCII) as node's `new URL` does
// it, in idna.h: every script mapped, normalized and punycoded ("bücher.de"
// is "xn--bcher-kva.de", "例え。テスト" is "xn--r8jz45g.xn--zckzah"), full-width
// and ideographic dots, "xn--" labels checked; every host this parser
// writes parses again to itself.
//
// Not done (kUnsupported, so a caller can say so instead of guessing): the
// `file:` scheme and non-special schemes (`mailto:`, `data:`, `blob:`, ...),
// including relative input against such a base.
//
// Thread-safety: pure functions.
//
// Example:
//   UrlParseResult r = ParseWhatwgUrl("HTTP://Ex.com:80/a/../b c?x=é#f");
//   r.url.Href();  // "http://ex.com/b%20c?x=%C3%A9#f"
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace capstan::experiments {

// A parsed URL of a special scheme; every string ASCII, already encoded.
struct WhatwgUrl {
  std::string scheme;  // lower-case, without ':'
  std::string username;
  std::string password;
  std::string host;                     // serialized: domain, dotted IPv4, or [IPv6]
  std::optional<uint16_t> port;         // nullopt: none, or the scheme's default
  std::vector<std::string> path;        // segments (a special URL has at least one)
  std::optional<std::string> query;     // without '?'
  std::optional<std::string> fragment;  // without '#'

  std::string Href() const;      // url.href / toString()
  std::string Origin() const;    // url.origin
  std::string Host() const;      // url.host: host[:port]
  std::string Pathname() const;  // url.pathname
  std::string Hash() const;      // url.hash: "" or "#fragment"
};

struct UrlParseResult {
  enum Status { kOk, kFailure, kUnsupported };
  Status status = kFailure;  // kFailure: JavaScript throws "TypeError: Invalid URL"
  WhatwgUrl url;
  bool ok() const { return status == kOk; }
};

// new URL(input, base); base nullptr: new URL(input). The base must be a URL
// this parser produced.
UrlParseResult ParseWhatwgUrl(std::string_view input, const WhatwgUrl* base = nullptr);

// URLSearchParams: the application/x-www-form-urlencoded name/value list,
// names and values as UTF-8 (decoded, invalid bytes replaced by U+FFFD).
class UrlSearchParams {
 public:
  // new URLSearchParams(query) / url.searchParams over url.query (no '?').
  static UrlSearchParams Parse(std::string_view query);

  // get(name) (the first pair's value), has(name), set(name, value).
  const std::string* Get(std::string_view name) const;
  bool Has(std::string_view name) const;
  void Set(std::string_view name, std::string_view value);
  // toString(): '+' for spaces, `*-._` and alphanumerics kept, the rest %XX.
  std::string Serialize() const;

  const std::vector<std::pair<std::string, std::string>>& pairs() const { return pairs_; }

 private:
  std::vector<std::pair<std::string, std::string>> pairs_;
};

}  // namespace capstan::experiments
