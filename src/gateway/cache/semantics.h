// The rules of a shared HTTP cache (RFC 9111, RFC 5861, RFC 8246) as pure
// functions: whether a response may be stored, how long it is fresh, how old
// it is, whether a stored response may answer a request (fresh, stale with
// the request's or the response's permission, or only after validation),
// the conditional request that validates it, how a 304 updates it, Vary's
// secondary keys, what an unsafe method invalidates, byte ranges and the
// client's own conditionals. No I/O and no clock: every time is an argument
// (seconds on the cache's clock, Unix epoch), so tests pin them.
//
//   CacheControl req = ParseCacheControl(request_fields, /*request=*/true);
//   CacheControl res = ParseCacheControl(response_fields);
//   if (WhyNotStorable("GET", request_fields, req, 200, response_fields, res) == nullptr) {
//     int64_t lifetime = FreshnessLifetime(200, response_fields, res, now, options);
//     ...
//   }
//
// Thread-safety: plain functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/cache/cache_control.h"
#include "net/http1.h"

namespace capstan::gateway::cache {

using Fields = net::http1::HeaderFields;

struct FreshnessOptions {
  // Heuristic freshness (§4.2.2): this fraction of the time since
  // Last-Modified, at most `heuristic_max_seconds`.
  double heuristic_fraction = 0.1;
  int64_t heuristic_max_seconds = 86400;
};

// Status codes RFC 9110 §15.1 makes heuristically cacheable.
bool HeuristicallyCacheableStatus(int status);
// Status codes whose caching rules this cache implements (must-understand).
bool UnderstoodStatus(int status);
// Methods whose success invalidates stored responses (RFC 9111 §4.4):
// anything but GET, HEAD, OPTIONS and TRACE.
bool IsUnsafeMethod(std::string_view method);

// Why the response to a request may not be stored by a shared cache
// (RFC 9111 §3, §3.5, §5.2), or null when it may. Only GET responses are
// stored (HEAD is answered from a stored GET); 206 and 304 are never stored
// as such (a 304 updates a stored response instead).
const char* WhyNotStorable(std::string_view method, const Fields& request,
                           const CacheControl& request_cc, int status, const Fields& response,
                           const CacheControl& response_cc);

// The freshness lifetime in seconds (§4.2.1): s-maxage, else max-age, else
// Expires - Date (Date absent: `response_time`), else the heuristic (for a
// heuristically cacheable status or `public`, with Last-Modified), else 0.
int64_t FreshnessLifetime(int status, const Fields& response, const CacheControl& response_cc,
                          int64_t response_time, const FreshnessOptions& options);
// Whether FreshnessLifetime came from the heuristic (no explicit freshness).
bool HasExplicitFreshness(const Fields& response, const CacheControl& response_cc);

// §4.2.3: the age of the response when it arrived, from its Age and Date
// fields and the times the request left and the response arrived.
int64_t CorrectedInitialAge(const Fields& response, int64_t request_time, int64_t response_time);
inline int64_t CurrentAge(int64_t corrected_initial_age, int64_t response_time, int64_t now) {
  int64_t resident = now > response_time ? now - response_time : 0;
  return corrected_initial_age + resident;
}

// What a stored response's times say, for Evaluate.
struct StoredTimes {
  int64_t response_time = 0;
  int64_t corrected_initial_age = 0;
  int64_t lifetime = 0;
};

enum class Use {
  kFresh,                 // serve it
  kStaleAllowed,          // stale, but the request's max-stale allows it
  kStaleWhileRevalidate,  // stale, serve it and refresh in the background (RFC 5861)
  kValidate,              // ask the origin (a conditional request), or 504 if only-if-cached
};

struct Verdict {
  Use use = Use::kValidate;
  int64_t age = 0;        // the current age: the Age field to send
  int64_t staleness = 0;  // seconds past the lifetime (0 while fresh)
};

// Whether a stored response may answer a request now (§4, §4.2.4, §5.2.1,
// RFC 5861 §3, RFC 8246): no-cache on either side forces validation;
// request max-age and min-fresh narrow freshness (a fresh immutable
// response ignores the request's max-age: it is a reload, not a doubt);
// a stale response is served only when neither must-revalidate,
// proxy-revalidate nor s-maxage forbids it and the request's max-stale or
// the response's stale-while-revalidate window allows it.
Verdict Evaluate(const StoredTimes& stored, const CacheControl& response_cc,
                 const CacheControl& request_cc, int64_t now);

// Whether a stale response may answer after the origin failed (an error
// status >= 500 or no answer): RFC 5861 §4, the request's or the
// response's stale-if-error window, unless must-revalidate forbids it.
bool MayServeStaleOnError(const CacheControl& response_cc, const CacheControl& request_cc,
                          int64_t staleness);

// Adds the validators of a stored response to a request (§4.3.1):
// If-None-Match with its ETag and If-Modified-Since with its Last-Modified.
// False when the stored response has neither (nothing to validate with).
bool AddConditionals(const Fields& stored, Fields* request);
// Removes the client's conditional and range fields from a request that
// will fill the cache (the whole response is fetched; the client's
// conditions are then answered from it).
void RemoveConditionals(Fields* request);

// §3.2 / §4.3.4: a 304's fields replace the stored response's same-named
// fields (hop-by-hop fields and Content-Length excepted). Returns the
// updated fields.
Fields MergeNotModified(const Fields& stored, const Fields& not_modified);

// RFC 9111 §4.3.5: whether a 200 answer to a HEAD may update a stored GET
// response (of `stored_length` body bytes): the validators it carries (ETag,
// Last-Modified) equal the stored ones, and its Content-Length, if any, is
// the stored body's length. Otherwise the stored response is not to be
// reused without validation.
bool HeadResponseMatches(const Fields& stored, uint64_t stored_length, const Fields& head);

// The client's conditionals against a stored 200 (RFC 9110 §13.1.2,
// §13.1.3): true when the answer is 304 Not Modified. If-None-Match wins
// over If-Modified-Since; weak comparison.
bool ClientNotModified(const Fields& request, const Fields& stored);

// Vary (§4.1): the names a response varies on, lower-cased; nullopt for
// "Vary: *" (no request can match it). Empty: no Vary.
std::optional<std::vector<std::string>> VaryNames(const Fields& response);
// A request's value for a Vary name, normalised so that equivalent requests
// match: every field of the name joined with ",", whitespace around commas
// removed; absent fields give the empty string (and match only absence).
std::string NormalizedVaryValue(const Fields& request, std::string_view name);

// Single byte ranges (RFC 9110 §14): "bytes=a-b", "bytes=a-", "bytes=-n".
struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;  // inclusive
};
enum class RangeResult {
  kIgnore,         // no Range, another unit, several ranges, or syntax error: serve 200
  kSatisfiable,    // 206 with Content-Range: bytes first-last/length
  kUnsatisfiable,  // 416 with Content-Range: bytes */length
};
RangeResult EvaluateRange(std::string_view range, uint64_t length, ByteRange* out);
// If-Range (RFC 9110 §13.1.5): whether the range applies to the stored
// response (a strong ETag equal to it, or a date equal to Last-Modified).
bool IfRangeHolds(std::string_view if_range, const Fields& stored);

// A cache key's target part from an authority and a request target:
// "host:port" lower-cased, then the path and query as sent.
std::string PrimaryKey(std::string_view authority, std::string_view path, std::string_view query);
// The keys an unsafe request invalidates (§4.4), given that its response
// was not an error (status < 400): its own, and those of Location and
// Content-Location when they name the same authority.
std::vector<std::string> InvalidationKeys(std::string_view authority, std::string_view path,
                                          std::string_view query, const Fields& response);

}  // namespace capstan::gateway::cache
