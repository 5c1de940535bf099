#include "gateway/cache/serve.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "gateway/proxy.h"
#include "net/http_router.h"
#include "net/splice_sender.h"

namespace capstan::gateway::cache {
namespace {

namespace http1 = net::http1;

Fields CopyFields(const Fields& from) {
  Fields out;
  for (const auto& f : from) out.Add(f.name, f.value);
  return out;
}

// One contiguous block of exactly the body's size: the stored copy (made
// once per store, never per hit) does not pin the socket's larger blocks.
// A large body goes into a mapped block, which a hit in clear text sends
// without copying (net/splice_sender.h).
net::Buffer Compact(const net::Buffer& body) {
  if (body.size() >= net::SpliceSender::kMinSliceBytes) return net::Buffer::MappedCopy(body);
  net::Buffer out;
  if (body.empty()) return out;
  std::span<char> span = out.Reserve(body.size(), body.size());
  body.CopyTo(span.data(), body.size());
  out.Commit(body.size());
  return out;
}

std::vector<std::string> Tags(const Fields& fields, const std::vector<std::string>& names) {
  std::vector<std::string> tags;
  for (const std::string& name : names) {
    for (const auto& f : fields) {
      if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), name)) continue;
      for (absl::string_view t : absl::StrSplit(absl::string_view(f.value.data(), f.value.size()),
                                                absl::ByAnyChar(" ,\t"), absl::SkipEmpty())) {
        tags.emplace_back(t);
      }
    }
  }
  return tags;
}

// RFC 9213 §3: targeted fields are forwarded unless configured away.
void StripTargeted(const CacheConfig& settings, Fields* fields) {
  if (!settings.strip_targeted_fields) return;
  for (const std::string& name : settings.targeted_fields) fields->Remove(name);
}

const CacheConfig& Settings(const DownstreamContext& ctx) {
  static const CacheConfig kDefaults;
  const auto& c = (*ctx.snapshot)->config.cache;
  return c ? *c : kDefaults;
}

bool HasClientConditions(const Fields& f) {
  return f.Get("range") || f.Get("if-none-match") || f.Get("if-modified-since") ||
         f.Get("if-match") || f.Get("if-unmodified-since") || f.Get("if-range");
}

// Fills in what a stored response derives from its fields. `age_source`:
// the response that just arrived (its Age and Date).
void Finalize(StoredResponse* obj, const Fields& age_source, int64_t request_time,
              int64_t response_time, const HttpCache& cache, const CacheConfig& settings) {
  obj->cc = ResponseCacheControl(obj->fields, settings.targeted_fields);
  obj->times.response_time = response_time;
  obj->times.corrected_initial_age = CorrectedInitialAge(age_source, request_time, response_time);
  obj->times.lifetime =
      FreshnessLifetime(obj->status, obj->fields, obj->cc, response_time, cache.freshness());
  obj->fields.Remove("age");  // sent as computed at each hit
  if (!settings.status_header.empty()) obj->fields.Remove(settings.status_header);
  obj->tags = Tags(obj->fields, settings.tag_headers);
  obj->stored_at = response_time;
}

// The client side of a forward that the cache watches: it stores the
// response as it streams to the client (`inner`; null for a background
// refresh), turns an origin's 304 into an update of the stored response,
// swallows an error the stale response may replace (stale-if-error), and
// invalidates on an unsafe method's success.
class FillExchange final : public DownstreamExchange {
 public:
  enum class Result { kPassed, kRevalidated, kStaleOnError };

  FillExchange(HttpCache& cache, const CacheConfig& settings, DownstreamExchange* inner,
               ProxyRequest* request, Fields original_request, CacheControl request_cc,
               std::string key, ObjectRef stale, int64_t staleness, std::shared_ptr<Fill> fill,
               bool store, std::string_view label)
      : cache_(cache),
        settings_(settings),
        inner_(inner),
        request_(request),
        original_(std::move(original_request)),
        request_cc_(request_cc),
        key_(std::move(key)),
        stale_(std::move(stale)),
        staleness_(staleness),
        fill_(std::move(fill)),
        store_(store),
        label_(label),
        request_time_(cache.Now()) {
    if (inner_ != nullptr) {
      // Fields for this client alone (an experiment's new-unit cookie):
      // Forward adds them to the head; they are kept out of the stored copy.
      extra_response_fields = inner_->extra_response_fields;
      // The client side cancels through the exchange it knows: pass it on to
      // whatever the forwarding code set on this one.
      inner_->cancel_upstream = [this] {
        if (cancel_upstream) cancel_upstream();
      };
    }
  }
  ~FillExchange() override {
    ReleaseFill();
    if (inner_ != nullptr) inner_->cancel_upstream = nullptr;
  }

  void set_invalidate(bool v) { invalidate_ = v; }
  Result result() const { return result_; }
  ObjectRef revalidated() const { return revalidated_; }

  ProxyRequest& request() override { return *request_; }
  net::Task<BodyEvent> NextBody() override {
    if (inner_ == nullptr) co_return BodyEvent{};
    auto next = inner_->NextBody();
    co_return co_await next;
  }
  void SendContinue() override {
    if (inner_ != nullptr) inner_->SendContinue();
  }

  bool SendHead(int code, http1::HeaderFields& fields, bool has_body,
                std::optional<uint64_t> length) override {
    int64_t now = cache_.Now();
    if (stale_ != nullptr && code == 304) {
      auto updated = std::make_shared<StoredResponse>();
      updated->key = stale_->key;
      updated->vary = stale_->vary;
      updated->status = stale_->status;
      updated->fields = MergeNotModified(stale_->fields, Storable(fields));
      updated->body = stale_->body.Share();
      Finalize(updated.get(), fields, request_time_, now, cache_, settings_);
      // A no-store request stores nothing, not even the 304's update.
      if (!request_cc_.no_store) {
        if (cache_.store().Insert(updated)) cache_.Stored(updated);
        if (fill_ != nullptr) fill_->set_result(updated);
      }
      revalidated_ = std::move(updated);
      result_ = Result::kRevalidated;
      swallow_ = true;
      cache_.counters().revalidated->Inc();
      ReleaseFill();
      return true;
    }
    if (stale_ != nullptr && code >= 500 &&
        MayServeStaleOnError(stale_->cc, request_cc_, staleness_)) {
      result_ = Result::kStaleOnError;
      swallow_ = true;
      ReleaseFill();
      return true;
    }
    if (invalidate_ && code >= 200 && code < 400) {
      for (const std::string& k :
           InvalidationKeys(request_->authority, request_->path, request_->query, fields)) {
        size_t n = cache_.RemoveKey(k);
        if (n > 0) cache_.counters().purged->Inc(n);
      }
    }
    if (stale_ != nullptr && code == 200 && request_->method == "HEAD") {
      if (ObjectRef updated = UpdateFromHead(fields, now)) {
        // Answered like a 304: the client gets the updated stored fields
        // (those the HEAD did not repeat are kept).
        revalidated_ = std::move(updated);
        result_ = Result::kRevalidated;
        swallow_ = true;
        ReleaseFill();
        return true;
      }
    }
    CacheControl response_cc = ResponseCacheControl(fields, settings_.targeted_fields);
    bool storable =
        store_ &&
        WhyNotStorable("GET", original_, request_cc_, code, fields, response_cc) == nullptr &&
        (!length || *length <= cache_.max_object_size());
    if (storable) {
      capture_ = std::make_shared<StoredResponse>();
      capture_->key = key_;
      capture_->status = code;
      capture_->fields = Storable(fields);
      if (auto names = VaryNames(fields)) {
        for (const std::string& name : *names) {
          capture_->vary.emplace_back(name, NormalizedVaryValue(original_, name));
        }
      }
      response_time_ = now;
    } else {
      ReleaseFill();  // waiters go upstream themselves
    }
    if (inner_ == nullptr) return true;
    if (!settings_.status_header.empty()) fields.Set(settings_.status_header, label_);
    StripTargeted(settings_, &fields);
    inner_->cache_status = label_;
    inner_->status = code;
    inner_->response_started = true;
    return inner_->SendHead(code, fields, has_body, length);
  }

  net::Task<bool> SendBody(net::Buffer piece) override {
    if (swallow_) co_return true;
    if (capture_ != nullptr) {
      if (captured_.size() + piece.size() > cache_.max_object_size()) {
        capture_.reset();
        captured_.Clear();
        ReleaseFill();
      } else {
        captured_.Append(piece.Share());
      }
    }
    if (inner_ == nullptr) co_return true;
    auto send = inner_->SendBody(std::move(piece));
    co_return co_await send;
  }

  void End(const http1::HeaderFields* trailers) override {
    if (capture_ != nullptr) {
      capture_->body = Compact(captured_);
      captured_.Clear();
      Finalize(capture_.get(), capture_->fields, request_time_, response_time_, cache_, settings_);
      // A response with an Age of its own: CorrectedInitialAge read it from
      // the fields before Finalize dropped it.
      ObjectRef stored = std::move(capture_);
      if (cache_.store().Insert(stored)) {
        cache_.counters().stores->Inc();
        cache_.Stored(stored);
        if (fill_ != nullptr) fill_->set_result(std::move(stored));
      }
    }
    ReleaseFill();
    if (!swallow_ && inner_ != nullptr) inner_->End(trailers);
  }

  void Abort() override {
    capture_.reset();
    ReleaseFill();
    if (!swallow_ && inner_ != nullptr) inner_->Abort();
  }

  void SendLocal(int code, std::string_view body, std::string_view extra_name,
                 std::string_view extra_value) override {
    capture_.reset();
    if (stale_ != nullptr && code >= 500 &&
        MayServeStaleOnError(stale_->cc, request_cc_, staleness_)) {
      result_ = Result::kStaleOnError;
      swallow_ = true;
      ReleaseFill();
      return;
    }
    ReleaseFill();
    if (inner_ == nullptr) return;
    inner_->cache_status = label_;
    inner_->status = code;
    inner_->response_started = true;
    inner_->SendLocal(code, body, extra_name, extra_value);
  }

 private:
  // RFC 9111 §4.3.5: a 200 to a HEAD sent to validate a stored GET updates
  // it like a 304 when their validators (ETag, Last-Modified) and
  // Content-Length agree where both have them; else the stored response is
  // no longer trusted (removed: the next GET fetches it again). Returns
  // the updated response, or null.
  ObjectRef UpdateFromHead(const http1::HeaderFields& fields, int64_t now) {
    Fields head = Storable(fields);
    if (!HeadResponseMatches(stale_->fields, stale_->body.size(), head)) {
      size_t n = cache_.RemoveKey(stale_->key);
      if (n > 0) cache_.counters().purged->Inc(n);
      return nullptr;
    }
    if (request_cc_.no_store) return nullptr;
    auto updated = std::make_shared<StoredResponse>();
    updated->key = stale_->key;
    updated->vary = stale_->vary;
    updated->status = stale_->status;
    updated->fields = MergeNotModified(stale_->fields, head);
    updated->body = stale_->body.Share();
    Finalize(updated.get(), fields, request_time_, now, cache_, settings_);
    if (cache_.store().Insert(updated)) cache_.Stored(updated);
    if (fill_ != nullptr) fill_->set_result(updated);  // GETs waiting on this HEAD
    cache_.counters().head_updates->Inc();
    return updated;
  }

  // `fields` without those meant for this client alone.
  Fields Storable(const http1::HeaderFields& fields) const {
    Fields out;
    for (const auto& f : fields) {
      bool for_this_client = false;
      for (const auto& [name, value] : extra_response_fields) {
        for_this_client |= f.name == name && f.value == value;
      }
      if (!for_this_client) out.Add(f.name, f.value);
    }
    return out;
  }

  void ReleaseFill() {
    if (fill_ != nullptr) std::exchange(fill_, nullptr)->Complete();
  }

  HttpCache& cache_;
  const CacheConfig& settings_;
  DownstreamExchange* inner_;
  ProxyRequest* request_;
  Fields original_;  // the client's fields before forwarding edited them (Vary values)
  CacheControl request_cc_;
  std::string key_;
  ObjectRef stale_;  // the stored response being revalidated, if any
  int64_t staleness_;
  std::shared_ptr<Fill> fill_;
  bool store_;
  std::string_view label_;
  int64_t request_time_;
  int64_t response_time_ = 0;
  bool invalidate_ = false;
  bool swallow_ = false;  // the client is answered from the store instead
  Result result_ = Result::kPassed;
  ObjectRef revalidated_;
  std::shared_ptr<StoredResponse> capture_;
  net::Buffer captured_;
};

// Reads away a request body the cache answered without it.
net::Task<bool> Discard(DownstreamExchange& x) {
  size_t discarded = 0;
  while (true) {
    BodyEvent ev = co_await x.NextBody();
    if (ev.type == BodyEvent::kEnd) co_return true;
    if (ev.type == BodyEvent::kError) co_return false;
    discarded += ev.piece.size();
    if (discarded > (64 << 10)) co_return false;
  }
}

net::Task<bool> Finish(DownstreamExchange& x) {
  bool keep = x.request().keep_alive;
  if (keep && x.request().has_body) keep = co_await Discard(x);
  co_return keep;
}

// Answers from a stored response: the client's conditionals (304), a single
// byte range (206 / 416), HEAD, or the whole body as shared slices.
// `request`: the client's fields (its conditionals and Range).
net::Task<bool> ServeStored(DownstreamExchange& x, const StoredResponse& obj, int64_t age,
                            std::string_view label, const CacheConfig& settings,
                            const Fields& request) {
  ProxyRequest& in = x.request();
  Fields f = CopyFields(obj.fields);
  StripTargeted(settings, &f);
  if (settings.age_header) f.Set("age", absl::StrCat(age));
  if (!settings.status_header.empty()) f.Set(settings.status_header, label);
  for (const auto& [name, value] : x.extra_response_fields) f.Add(name, value);
  x.cache_status = label;
  x.response_started = true;
  const uint64_t length = obj.body.size();
  const bool head = in.method == "HEAD";
  if (obj.status == 200 && ClientNotModified(request, obj.fields)) {
    f.Remove("content-length");
    x.status = 304;
    x.SendHead(304, f, false, std::nullopt);
    x.End(nullptr);
    co_return co_await Finish(x);
  }
  if (obj.status == 200) {
    std::optional<std::string_view> range = request.Get("range");
    std::optional<std::string_view> if_range = request.Get("if-range");
    ByteRange r;
    RangeResult rr = RangeResult::kIgnore;
    if (range && (!if_range || IfRangeHolds(*if_range, obj.fields))) {
      rr = EvaluateRange(*range, length, &r);
    }
    if (rr == RangeResult::kUnsatisfiable) {
      f.Set("content-range", absl::StrCat("bytes */", length));
      x.status = 416;
      x.SendHead(416, f, false, std::nullopt);
      x.End(nullptr);
      co_return co_await Finish(x);
    }
    if (rr == RangeResult::kSatisfiable) {
      uint64_t n = r.last - r.first + 1;
      f.Set("content-range", absl::StrCat("bytes ", r.first, "-", r.last, "/", length));
      x.status = 206;
      if (!x.SendHead(206, f, true, n)) co_return false;
      if (!head) {
        auto send = x.SendBody(obj.body.ShareRange(r.first, n));
        if (!co_await send) co_return false;
      }
      x.End(nullptr);
      co_return co_await Finish(x);
    }
  }
  f.Set("accept-ranges", "bytes");
  x.status = obj.status;
  bool has_body = obj.status != 204 && obj.status != 304;
  if (!x.SendHead(obj.status, f, has_body, length)) co_return false;
  if (has_body && !head && length > 0) {
    auto send = x.SendBody(obj.body.Share());
    if (!co_await send) co_return false;
  }
  x.End(nullptr);
  co_return co_await Finish(x);
}

// A request of the cache's own (a background refresh) with its storage.
struct OwnedRequest {
  std::string authority, path, query;
  Fields fields;
  ProxyRequest request;
};

// Stale-while-revalidate: a conditional request in the background; its
// answer (304 or a new response) updates the store. No client waits.
net::Task<void> Refresh(DownstreamContext ctx, std::shared_ptr<const Snapshot> snapshot,
                        const Route* route, Cluster* cluster, std::shared_ptr<HttpCache> cache,
                        ObjectRef stale, std::unique_ptr<OwnedRequest> owned, std::string key,
                        CacheControl request_cc) {
  ConnectionControl control;
  ctx.control = &control;
  ctx.access_log = nullptr;
  const CacheConfig& settings = snapshot->config.cache ? *snapshot->config.cache : CacheConfig{};
  {
    FillExchange fetch(*cache, settings, nullptr, &owned->request, CopyFields(owned->fields),
                       request_cc, key, stale, 0, nullptr, /*store=*/true, "MISS");
    auto forward = Forward(ctx, fetch, *route, *cluster);
    (void)co_await forward;
  }
  cache->EndRefresh(key);
}

void StartRefresh(DownstreamContext& ctx, const std::shared_ptr<const Snapshot>& snapshot,
                  const Route& route, Cluster& cluster, const std::shared_ptr<HttpCache>& cache,
                  const ObjectRef& stale, const ProxyRequest& in, const std::string& key,
                  const CacheControl& request_cc) {
  if (!cache->BeginRefresh(key)) return;  // one at a time per key
  auto owned = std::make_unique<OwnedRequest>();
  owned->authority = std::string(in.authority);
  owned->path = std::string(in.path);
  owned->query = std::string(in.query);
  owned->fields = CopyFields(*in.fields);
  RemoveConditionals(&owned->fields);
  AddConditionals(stale->fields, &owned->fields);
  ProxyRequest& r = owned->request;
  r.method = "GET";
  r.authority = owned->authority;
  r.path = owned->path;
  r.query = owned->query;
  r.fields = &owned->fields;
  r.keep_alive = true;
  r.http2 = in.http2;
  ctx.loop->StartOwned(
      Refresh(ctx, snapshot, &route, &cluster, cache, stale, std::move(owned), key, request_cc));
}

}  // namespace

// ---- the request path

net::Task<bool> ServeCached(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                            Cluster& cluster, std::shared_ptr<HttpCache> cache) {
  // Held for a background refresh: `route` and `cluster` belong to it.
  std::shared_ptr<const Snapshot> snapshot = *ctx.snapshot;
  const CacheConfig& settings = Settings(ctx);
  const HttpCache::Counters& counters = cache->counters();
  ProxyRequest& in = x.request();
  std::string key = PrimaryKey(in.authority, in.path, in.query);
  if (!route.config().split.empty() || route.config().experiment) {
    // A route that picks among clusters (weights, an experiment's variants):
    // each cluster's answer is its own object.
    absl::StrAppend(&key, "#", cluster.name());
  }
  if (in.upgrade) {
    // A WebSocket (or other) upgrade becomes a tunnel: the client's own
    // exchange, which has the socket.
    counters.passes->Inc();
    auto forward = Forward(ctx, x, route, cluster);
    co_return co_await forward;
  }
  // Not cacheable by method: unsafe methods invalidate on success.
  if (in.method != "GET" && in.method != "HEAD") {
    counters.passes->Inc();
    FillExchange pass(*cache, settings, &x, &in, Fields(), CacheControl{}, key, nullptr, 0, nullptr,
                      /*store=*/false, "PASS");
    pass.set_invalidate(IsUnsafeMethod(in.method));
    auto forward = Forward(ctx, pass, route, cluster);
    bool keep = co_await forward;
    x.upstream = std::move(pass.upstream);
    x.request_id = std::move(pass.request_id);
    co_return keep;
  }
  const CacheControl request_cc = ParseCacheControl(*in.fields, /*request=*/true);
  const bool head = in.method == "HEAD";
  for (int round = 0;; ++round) {
    ObjectRef stored = cache->store().Lookup(key, *in.fields);
    if (stored == nullptr && cache->disk() != nullptr) {
      auto load = cache->LoadFromDisk(ctx.loop, key, *in.fields, settings);
      stored = co_await load;
    }
    Verdict verdict;
    if (stored != nullptr) {
      verdict = Evaluate(stored->times, stored->cc, request_cc, cache->Now());
      switch (verdict.use) {
        case Use::kFresh: {
          counters.hits->Inc();
          auto serve = ServeStored(x, *stored, verdict.age, "HIT", settings, *in.fields);
          co_return co_await serve;
        }
        case Use::kStaleWhileRevalidate:
          StartRefresh(ctx, snapshot, route, cluster, cache, stored, in, key, request_cc);
          [[fallthrough]];
        case Use::kStaleAllowed: {
          counters.stale->Inc();
          auto serve = ServeStored(x, *stored, verdict.age, "STALE", settings, *in.fields);
          co_return co_await serve;
        }
        case Use::kValidate:
          break;
      }
    }
    if (request_cc.only_if_cached) {
      // RFC 9111 §5.2.1.7: nothing usable without the origin.
      x.status = 504;
      x.cache_status = "MISS";
      x.response_started = true;
      x.SendLocal(504, "not in cache (only-if-cached)\n");
      co_return co_await Finish(x);
    }
    // HEAD, no-store, or a conditional / range request with nothing stored:
    // forwarded as it is, nothing stored.
    if (stored == nullptr && (head || request_cc.no_store || HasClientConditions(*in.fields))) {
      counters.passes->Inc();
      FillExchange pass(*cache, settings, &x, &in, Fields(), request_cc, key, nullptr, 0, nullptr,
                        /*store=*/false, "PASS");
      auto forward = Forward(ctx, pass, route, cluster);
      bool keep = co_await forward;
      x.upstream = std::move(pass.upstream);
      x.request_id = std::move(pass.request_id);
      co_return keep;
    }
    // A miss, or a stored response to validate: one fetch per key at a time.
    std::shared_ptr<Fill> fill;
    if (round < 2) {
      bool leader = false;
      fill = cache->BeginFill(key, &leader);
      if (!leader) {
        counters.coalesced->Inc();
        auto wait = fill->Wait(ctx.loop);
        co_await wait;
        ObjectRef produced = fill->result();
        fill.reset();
        if (produced != nullptr && produced->MatchesVary(*in.fields) &&
            !request_cc.only_if_cached) {
          Verdict now = Evaluate(produced->times, produced->cc, request_cc, cache->Now());
          counters.hits->Inc();
          auto serve = ServeStored(x, *produced, now.age, "HIT", settings, *in.fields);
          co_return co_await serve;
        }
        // The leader stored a response (look it up again) or it could not;
        // after two waits this request fetches on its own.
        continue;
      }
    }
    Fields original = CopyFields(*in.fields);
    Fields client = CopyFields(original);  // Forward edits in.fields
    if (stored != nullptr) {
      // Validate: our validators, not the client's (answered from the store after).
      RemoveConditionals(in.fields);
      AddConditionals(stored->fields, in.fields);
    } else {
      counters.misses->Inc();
    }
    FillExchange fetch(*cache, settings, &x, &in, std::move(original), request_cc, key, stored,
                       verdict.staleness, std::move(fill),
                       /*store=*/!head && !request_cc.no_store, "MISS");
    auto forward = Forward(ctx, fetch, route, cluster);
    bool keep = co_await forward;
    x.upstream = std::move(fetch.upstream);
    x.request_id = std::move(fetch.request_id);
    if (fetch.result() == FillExchange::Result::kRevalidated) {
      ObjectRef fresh = fetch.revalidated();
      // The client's own conditions and range apply to the updated response.
      Verdict now = Evaluate(fresh->times, fresh->cc, CacheControl{}, cache->Now());
      auto serve = ServeStored(x, *fresh, now.age, "REVALIDATED", settings, client);
      bool served = co_await serve;
      co_return served&& keep;
    }
    if (fetch.result() == FillExchange::Result::kStaleOnError) {
      counters.stale->Inc();
      Verdict now = Evaluate(stored->times, stored->cc, CacheControl{}, cache->Now());
      auto serve = ServeStored(x, *stored, now.age, "STALE", settings, client);
      bool served = co_await serve;
      co_return served&& keep;
    }
    co_return keep;
  }
}

}  // namespace capstan::gateway::cache
