#include "gateway/cache/semantics.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace capstan::gateway::cache {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Eq(std::string_view a, std::string_view b) { return absl::EqualsIgnoreCase(A(a), A(b)); }

std::string_view Trim(std::string_view s) {
  absl::string_view t = absl::StripAsciiWhitespace(A(s));
  return std::string_view(t.data(), t.size());
}

std::optional<int64_t> DateField(const Fields& f, std::string_view name) {
  std::optional<std::string_view> v = f.Get(name);
  if (!v) return std::nullopt;
  return ParseHttpDate(*v);
}

// An entity tag's opaque part, for weak comparison ("W/" dropped).
std::string_view Opaque(std::string_view tag) {
  tag = Trim(tag);
  if (tag.size() >= 2 && (tag[0] == 'W' || tag[0] == 'w') && tag[1] == '/') tag.remove_prefix(2);
  return tag;
}

std::optional<uint64_t> Digits(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

}  // namespace

bool HeuristicallyCacheableStatus(int status) {
  switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
      return true;
    default:
      return false;
  }
}

bool UnderstoodStatus(int status) {
  return HeuristicallyCacheableStatus(status) || status == 302 || status == 303 || status == 307;
}

bool IsUnsafeMethod(std::string_view method) {
  return !(method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE");
}

bool HasExplicitFreshness(const Fields& response, const CacheControl& cc) {
  return cc.s_maxage.has_value() || cc.max_age.has_value() ||
         (!cc.targeted && response.Get("expires").has_value());
}

const char* WhyNotStorable(std::string_view method, const Fields& request,
                           const CacheControl& request_cc, int status, const Fields& response,
                           const CacheControl& response_cc) {
  if (method != "GET") return "method is not GET";
  if (status < 200 || status > 599) return "status is not final";
  if (status == 206 || status == 304) return "partial or not-modified response";
  if (request_cc.no_store) return "request no-store";
  // must-understand (§5.2.2.3): a cache that understands the status code
  // stores despite no-store (which is there for caches that do not).
  if (response_cc.no_store && !(response_cc.must_understand && UnderstoodStatus(status))) {
    return "response no-store";
  }
  if (response_cc.must_understand && !UnderstoodStatus(status)) {
    return "must-understand with a status this cache does not understand";
  }
  if (response_cc.private_) return "response private";
  if (request.Get("authorization") &&
      !(response_cc.must_revalidate || response_cc.public_ || response_cc.s_maxage)) {
    return "request has Authorization";
  }
  if (!VaryNames(response)) return "Vary: *";
  if (!(response_cc.public_ || HasExplicitFreshness(response, response_cc) ||
        HeuristicallyCacheableStatus(status))) {
    return "no explicit freshness and status not heuristically cacheable";
  }
  return nullptr;
}

bool HeadResponseMatches(const Fields& stored, uint64_t stored_length, const Fields& head) {
  for (std::string_view validator : {"etag", "last-modified"}) {
    std::optional<std::string_view> received = head.Get(validator);
    if (!received) continue;
    std::optional<std::string_view> kept = stored.Get(validator);
    if (!kept || Trim(*kept) != Trim(*received)) return false;
  }
  if (std::optional<std::string_view> length = head.Get("content-length")) {
    std::optional<uint64_t> n = Digits(Trim(*length));
    if (!n || *n != stored_length) return false;
  }
  return true;
}

int64_t FreshnessLifetime(int status, const Fields& response, const CacheControl& cc,
                          int64_t response_time, const FreshnessOptions& options) {
  if (cc.s_maxage) return *cc.s_maxage;
  if (cc.max_age) return *cc.max_age;
  int64_t date = DateField(response, "date").value_or(response_time);
  // A targeted field (RFC 9213) replaces Expires too.
  if (!cc.targeted && response.Get("expires")) {
    std::optional<int64_t> expires = DateField(response, "expires");
    if (!expires) return 0;  // an invalid Expires: already expired (§5.3)
    return std::max<int64_t>(0, *expires - date);
  }
  if (HeuristicallyCacheableStatus(status) || cc.public_) {
    std::optional<int64_t> last_modified = DateField(response, "last-modified");
    if (last_modified && date > *last_modified) {
      auto h = static_cast<int64_t>(static_cast<double>(date - *last_modified) *
                                    options.heuristic_fraction);
      return std::min(h, options.heuristic_max_seconds);
    }
  }
  return 0;
}

int64_t CorrectedInitialAge(const Fields& response, int64_t request_time, int64_t response_time) {
  int64_t age_value = 0;
  if (std::optional<std::string_view> age = response.Get("age")) {
    // One value is allowed; of a list ("7200, 0") the first is the sender's
    // (the first field line too, as Get gives it).
    std::string_view first = age->substr(0, age->find(','));
    if (std::optional<uint64_t> d = Digits(Trim(first))) {
      age_value = static_cast<int64_t>(std::min<uint64_t>(*d, kMaxDeltaSeconds));
    }
  }
  int64_t date = DateField(response, "date").value_or(response_time);
  int64_t apparent_age = std::max<int64_t>(0, response_time - date);
  int64_t response_delay = std::max<int64_t>(0, response_time - request_time);
  return std::max(apparent_age, age_value + response_delay);
}

Verdict Evaluate(const StoredTimes& stored, const CacheControl& res, const CacheControl& req,
                 int64_t now) {
  Verdict v;
  v.age = CurrentAge(stored.corrected_initial_age, stored.response_time, now);
  bool fresh = stored.lifetime > v.age;
  v.staleness = fresh ? 0 : v.age - stored.lifetime;
  v.use = Use::kValidate;
  if (res.no_cache || req.no_cache) return v;
  if (fresh) {
    bool acceptable = true;
    if (req.max_age && v.age > *req.max_age && !res.immutable) acceptable = false;
    if (req.min_fresh && stored.lifetime - v.age < *req.min_fresh) acceptable = false;
    if (acceptable) v.use = Use::kFresh;
    return v;
  }
  // Stale. A shared cache honours s-maxage as proxy-revalidate (§5.2.2.10).
  if (res.must_revalidate || res.proxy_revalidate || res.s_maxage) return v;
  if (req.max_age && v.age > *req.max_age) return v;
  if (req.max_stale_any || (req.max_stale && v.staleness <= *req.max_stale)) {
    v.use = Use::kStaleAllowed;
    return v;
  }
  if (res.stale_while_revalidate && v.staleness <= *res.stale_while_revalidate) {
    v.use = Use::kStaleWhileRevalidate;
  }
  return v;
}

bool MayServeStaleOnError(const CacheControl& res, const CacheControl& req, int64_t staleness) {
  if (res.must_revalidate || res.proxy_revalidate || res.s_maxage || res.no_cache) return false;
  if (req.stale_if_error && staleness <= *req.stale_if_error) return true;
  return res.stale_if_error && staleness <= *res.stale_if_error;
}

bool AddConditionals(const Fields& stored, Fields* request) {
  bool any = false;
  if (std::optional<std::string_view> etag = stored.Get("etag")) {
    request->Set("if-none-match", *etag);
    any = true;
  }
  if (std::optional<std::string_view> lm = stored.Get("last-modified")) {
    request->Set("if-modified-since", *lm);
    any = true;
  }
  return any;
}

void RemoveConditionals(Fields* request) {
  for (std::string_view name : {"if-none-match", "if-modified-since", "if-match",
                                "if-unmodified-since", "if-range", "range"}) {
    request->Remove(name);
  }
}

namespace {

bool KeptFromNotModified(std::string_view name) {
  static constexpr std::string_view kSkip[] = {
      "content-length",    "connection", "keep-alive", "proxy-connection", "te",
      "transfer-encoding", "upgrade",    "age"};
  for (std::string_view s : kSkip) {
    if (Eq(name, s)) return false;
  }
  return true;
}

}  // namespace

Fields MergeNotModified(const Fields& stored, const Fields& not_modified) {
  Fields out;
  for (const auto& f : stored) {
    if (KeptFromNotModified(f.name) && not_modified.Get(f.name)) continue;  // replaced
    out.Add(f.name, f.value);
  }
  for (const auto& f : not_modified) {
    if (KeptFromNotModified(f.name)) out.Add(f.name, f.value);
  }
  return out;
}

bool ClientNotModified(const Fields& request, const Fields& stored) {
  if (std::optional<std::string_view> inm = request.Get("if-none-match")) {
    std::optional<std::string_view> etag = stored.Get("etag");
    for (absl::string_view tag : absl::StrSplit(A(*inm), ',')) {
      std::string_view t(tag.data(), tag.size());
      if (Trim(t) == "*") return true;
      if (etag && Opaque(t) == Opaque(*etag)) return true;
    }
    return false;
  }
  if (std::optional<std::string_view> ims = request.Get("if-modified-since")) {
    std::optional<int64_t> since = ParseHttpDate(*ims);
    std::optional<int64_t> last_modified = DateField(stored, "last-modified");
    return since && last_modified && *last_modified <= *since;
  }
  return false;
}

std::optional<std::vector<std::string>> VaryNames(const Fields& response) {
  std::vector<std::string> names;
  for (const auto& f : response) {
    if (!Eq(f.name, "vary")) continue;
    for (absl::string_view part : absl::StrSplit(A(f.value), ',')) {
      std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(part));
      if (name.empty()) continue;
      if (name == "*") return std::nullopt;
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(std::move(name));
      }
    }
  }
  return names;
}

std::string NormalizedVaryValue(const Fields& request, std::string_view name) {
  std::string out;
  for (const auto& f : request) {
    if (!Eq(f.name, name)) continue;
    for (absl::string_view part : absl::StrSplit(A(f.value), ',')) {
      absl::string_view t = absl::StripAsciiWhitespace(part);
      if (t.empty()) continue;
      if (!out.empty()) out.push_back(',');
      out.append(t.data(), t.size());
    }
  }
  return out;
}

RangeResult EvaluateRange(std::string_view range, uint64_t length, ByteRange* out) {
  std::string_view r = Trim(range);
  if (r.size() < 6 || !Eq(r.substr(0, 6), "bytes=")) return RangeResult::kIgnore;
  r = Trim(r.substr(6));
  if (r.find(',') != std::string_view::npos) return RangeResult::kIgnore;
  size_t dash = r.find('-');
  if (dash == std::string_view::npos) return RangeResult::kIgnore;
  std::string_view a = Trim(r.substr(0, dash)), b = Trim(r.substr(dash + 1));
  if (a.empty()) {
    std::optional<uint64_t> n = Digits(b);
    if (!n) return RangeResult::kIgnore;
    if (*n == 0 || length == 0) return RangeResult::kUnsatisfiable;
    out->first = length - std::min(*n, length);
    out->last = length - 1;
    return RangeResult::kSatisfiable;
  }
  std::optional<uint64_t> first = Digits(a);
  if (!first) return RangeResult::kIgnore;
  uint64_t last = length == 0 ? 0 : length - 1;
  if (!b.empty()) {
    std::optional<uint64_t> l = Digits(b);
    if (!l || *l < *first) return RangeResult::kIgnore;
    last = std::min(last, *l);
  }
  if (*first >= length) return RangeResult::kUnsatisfiable;
  out->first = *first;
  out->last = last;
  return RangeResult::kSatisfiable;
}

bool IfRangeHolds(std::string_view if_range, const Fields& stored) {
  std::string_view v = Trim(if_range);
  if (v.starts_with("\"") || v.starts_with("W/")) {
    std::optional<std::string_view> etag = stored.Get("etag");
    if (!etag || v.starts_with("W/")) return false;
    std::string_view e = Trim(*etag);
    return !e.starts_with("W/") && e == v;
  }
  std::optional<int64_t> date = ParseHttpDate(v);
  std::optional<int64_t> last_modified = DateField(stored, "last-modified");
  return date && last_modified && *date == *last_modified;
}

std::string PrimaryKey(std::string_view authority, std::string_view path, std::string_view query) {
  std::string key = absl::AsciiStrToLower(A(authority));
  key.append(path.data(), path.size());
  if (!query.empty()) {
    key.push_back('?');
    key.append(query.data(), query.size());
  }
  return key;
}

std::vector<std::string> InvalidationKeys(std::string_view authority, std::string_view path,
                                          std::string_view query, const Fields& response) {
  std::vector<std::string> keys = {PrimaryKey(authority, path, query)};
  for (std::string_view name : {"location", "content-location"}) {
    std::optional<std::string_view> v = response.Get(name);
    if (!v) continue;
    std::string_view target = Trim(*v);
    std::string_view host = authority;
    if (target.starts_with("http://") || target.starts_with("https://")) {
      target.remove_prefix(target.find("//") + 2);
      size_t slash = target.find('/');
      host = target.substr(0, slash);
      target = slash == std::string_view::npos ? "/" : target.substr(slash);
      if (!Eq(host, authority)) continue;  // another origin: not ours to invalidate
    } else if (!target.starts_with("/") || target.starts_with("//")) {
      continue;
    }
    size_t q = target.find('?');
    std::string key = q == std::string_view::npos
                          ? PrimaryKey(authority, target, {})
                          : PrimaryKey(authority, target.substr(0, q), target.substr(q + 1));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace capstan::gateway::cache
