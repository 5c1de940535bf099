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
#include <vector>

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
  // Read from a targeted field (RFC 9213, e.g. CDN-Cache-Control): it
  // replaces Cache-Control and Expires, so Expires gives no freshness.
  bool targeted = false;
};

// Reads one Cache-Control field value into *cc (several fields: call once
// each, in order; the first occurrence of a directive wins).
void ParseCacheControlInto(std::string_view value, CacheControl* cc);
// Every Cache-Control field of `fields`, plus `Pragma: no-cache` as
// `no-cache` when no Cache-Control field is present (RFC 9111 §5.4, requests).
CacheControl ParseCacheControl(const net::http1::HeaderFields& fields, bool request = false);

// RFC 9213: one targeted field's value (CDN-Cache-Control, ...), an RFC 8941
// Dictionary: keys are lower-case, max-age / s-maxage / stale-while-revalidate
// / stale-if-error are non-negative Integers (past 2^31: 2^31), the others
// Booleans (a bare key is true), unknown keys are ignored. False, with *cc
// untouched, when the value is not a valid Dictionary, is empty, or a known
// directive has another type: the field is then ignored (§2.1).
bool ParseTargetedCacheControl(std::string_view value, CacheControl* cc);
// The response directives this cache obeys (RFC 9213 §2.1): those of the
// first field in `targeted` (lower-case names, in order; several lines of
// one field are one list) with a valid, non-empty value, else Cache-Control.
CacheControl ResponseCacheControl(const net::http1::HeaderFields& fields,
                                  const std::vector<std::string>& targeted);

// An HTTP-date in any of the three forms RFC 9110 §5.6.7 makes recipients
// accept (IMF-fixdate, RFC 850, asctime), as seconds since the Unix epoch.
// nullopt: not a date (an invalid Expires means "already expired").
std::optional<int64_t> ParseHttpDate(std::string_view text);
// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string FormatHttpDate(int64_t unix_seconds);

}  // namespace capstan::gateway::cache
