// Fuzz target: the HTTP cache's parsers and rules (gateway/cache): the input
// is read as a Cache-Control value, an HTTP-date, a Range value and, line by
// line ("name: value"), as request and response fields fed to the
// storability, freshness, age, conditional, Vary, 304-merge and HEAD-update
// rules; the value is also read as a targeted field (RFC 9213's Structured
// Field Dictionary).
// Invariants: no crash; every delta-seconds value in [0, 2^31]; a parsed
// date formats and parses back to itself; a satisfiable range lies inside
// the body; lifetimes and ages are never negative.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "gateway/cache/cache_control.h"
#include "gateway/cache/semantics.h"

namespace {

using capstan::gateway::cache::CacheControl;
namespace cache = capstan::gateway::cache;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckDelta(const std::optional<int64_t>& v) {
  if (v) Check(*v >= 0 && *v <= cache::kMaxDeltaSeconds);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  CacheControl cc;
  cache::ParseCacheControlInto(input, &cc);
  for (const auto* v : {&cc.max_age, &cc.s_maxage, &cc.stale_while_revalidate, &cc.stale_if_error,
                        &cc.max_stale, &cc.min_fresh}) {
    CheckDelta(*v);
  }
  CacheControl targeted;
  if (cache::ParseTargetedCacheControl(input, &targeted)) {
    Check(targeted.targeted && targeted.present);
    for (const auto* v : {&targeted.max_age, &targeted.s_maxage, &targeted.stale_while_revalidate,
                          &targeted.stale_if_error}) {
      CheckDelta(*v);
    }
  }
  if (std::optional<int64_t> t = cache::ParseHttpDate(input)) {
    if (*t >= 0 && *t < 253402300800LL) Check(cache::ParseHttpDate(cache::FormatHttpDate(*t)) == t);
  }
  for (uint64_t length : {uint64_t{0}, uint64_t{1}, uint64_t{1000}}) {
    cache::ByteRange r;
    if (cache::EvaluateRange(input, length, &r) == cache::RangeResult::kSatisfiable) {
      Check(r.first <= r.last && r.last < length);
    }
  }
  // Lines before an empty line are the request's fields, after it the response's.
  cache::Fields request, response;
  cache::Fields* into = &request;
  size_t start = 0;
  while (start <= input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    std::string_view line = input.substr(start, end - start);
    if (line.empty()) {
      into = &response;
    } else if (size_t colon = line.find(':'); colon != std::string_view::npos && colon > 0) {
      into->Add(line.substr(0, colon), line.substr(colon + 1));
    }
    start = end + 1;
  }
  CacheControl req_cc = cache::ParseCacheControl(request, /*request=*/true);
  CacheControl res_cc = cache::ParseCacheControl(response);
  const int64_t now = 1700000000;
  (void)cache::WhyNotStorable("GET", request, req_cc, 200, response, res_cc);
  int64_t lifetime = cache::FreshnessLifetime(200, response, res_cc, now, {});
  Check(lifetime >= 0);
  int64_t age = cache::CorrectedInitialAge(response, now - 1, now);
  Check(age >= 0);
  cache::Verdict v = cache::Evaluate({now, age, lifetime}, res_cc, req_cc, now + 10);
  Check(v.age >= 0 && v.staleness >= 0);
  (void)cache::MayServeStaleOnError(res_cc, req_cc, v.staleness);
  (void)cache::ClientNotModified(request, response);
  if (auto names = cache::VaryNames(response)) {
    for (const std::string& n : *names) (void)cache::NormalizedVaryValue(request, n);
  }
  // RFC 9213: a targeted field chosen over Cache-Control (or not).
  CacheControl chosen = cache::ResponseCacheControl(response, {"cdn-cache-control"});
  Check(cache::FreshnessLifetime(200, response, chosen, now, {}) >= 0);
  (void)cache::WhyNotStorable("GET", request, req_cc, 200, response, chosen);
  (void)cache::HeadResponseMatches(response, 5, request);
  cache::Fields merged = cache::MergeNotModified(response, request);
  Check(merged.Count("content-length") == response.Count("content-length"));
  cache::Fields conditional;
  (void)cache::AddConditionals(response, &conditional);
  (void)cache::InvalidationKeys("h", "/p", "", response);
  return 0;
}
