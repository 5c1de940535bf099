// Cache-Control (RFC 9111 §5.2) and HTTP-date (RFC 9110 §5.6.7) parsing for
// the gateway's HTTP cache. Pure functions, no I/O, no clock.
//
//   CacheControl cc = ParseCacheControl(response_fields);
//   if (cc.no_store) ...;
//   std::optional<int64_t> expires = ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT");
//
// Parsing is lenient the way RFC 9111 asks: unknown directives are ignored,
// names are case-insensitive, values may be tokens or quoted strings, the
// first occurrence of a duplicated directive wins, and a delta-seconds value
// past 2^31 is taken as 2^31 (§1.2.2). A max-age or s-maxage whose value is
// not delta-seconds makes the response stale (value 0), the conservative
// reading of §4.2.1.
//
// Thread-safety: plain values and functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "net/http1.h"

namespace capstan::gateway::cache {

// The largest delta-seconds value (RFC 9111 §1.2.2).
inline constexpr int64_t kMaxDeltaSeconds = 2147483648LL;

// Request and response directives in one structure: each side reads its own.
struct CacheControl {
  // Response directives (§5.2.2).
  std::optional<int64_t> max_age;   // also a request directive (§5.2.1.1)
  std::optional<int64_t> s_maxage;  // shared caches only
  bool no_store = false;            // also a request directive
  bool no_cache = false;            // also a request directive; qualified = unqualified
  bool private_ = false;            // qualified form treated as unqualified (safer)
  bool public_ = false;
  bool must_revalidate = false;
  bool proxy_revalidate = false;
  bool must_understand = false;
  bool no_transform = false;
  bool immutable = false;                         // RFC 8246
  std::optional<int64_t> stale_while_revalidate;  // RFC 5861 §3
  std::optional<int64_t> stale_if_error;          // RFC 5861 §4; also a request directive
  // Request directives (§5.2.1).
  bool max_stale_any = false;  // max-stale without a value: any staleness
  std::optional<int64_t> max_stale;
  std::optional<int64_t> min_fresh;
  bool only_if_cached = false;
  // Some directive was present at all.
  bool present = false;
};

// Reads one Cache-Control field value into *cc (several fields: call once
// each, in order; the first occurrence of a directive wins).
void ParseCacheControlInto(std::string_view value, CacheControl* cc);
// Every Cache-Control field of `fields`, plus `Pragma: no-cache` as
// `no-cache` when no Cache-Control field is present (RFC 9111 §5.4, requests).
CacheControl ParseCacheControl(const net::http1::HeaderFields& fields, bool request = false);

// An HTTP-date in any of the three forms RFC 9110 §5.6.7 makes recipients
// accept (IMF-fixdate, RFC 850, asctime), as seconds since the Unix epoch.
// nullopt: not a date (an invalid Expires means "already expired").
std::optional<int64_t> ParseHttpDate(std::string_view text);
// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string FormatHttpDate(int64_t unix_seconds);

}  // namespace capstan::gateway::cache
