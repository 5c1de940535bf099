// HttpCache, the process's cache object (serve.h): the memory store and
// the disk tier with its reader pool, request coalescing (Fill), background
// refreshes, counters and the purge endpoint. The request path that uses it
// is serve.cc.
#include <algorithm>
#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gateway/cache/serve.h"
#include "net/http_router.h"

namespace capstan::gateway::cache {

// ---- Fill

bool Fill::Awaiter::await_suspend(std::coroutine_handle<> h) {
  std::lock_guard lock(fill->mu_);
  if (fill->done_) return false;
  fill->waiters_.emplace_back(loop, h);
  return true;
}

void Fill::Complete() {
  owner_->EndFill(key_, this);
  std::vector<std::pair<net::EventLoop*, std::coroutine_handle<>>> waiters;
  {
    std::lock_guard lock(mu_);
    if (done_) return;
    done_ = true;
    waiters.swap(waiters_);
  }
  for (auto& [loop, h] : waiters) {
    loop->Post([loop = loop, h = h] { loop->Schedule(h); });
  }
}

// ---- HttpCache

HttpCache::HttpCache(const CacheConfig& config, metrics::Registry* registry)
    : store_(StoreOptions{.max_bytes = config.memory}),
      max_object_size_(std::min(config.max_object_size, store_.max_object_bytes())),
      clock_([] {
        return std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
      }) {
  freshness_.heuristic_max_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(config.heuristic_max).count();
  auto counter = [registry](const char* name, const char* help) {
    return registry->AddCounter(absl::StrCat("capstan_gateway_cache_", name, "_total"), help);
  };
  counters_.hits = counter("hits", "Requests answered from the cache (fresh).");
  counters_.misses = counter("misses", "Cacheable requests forwarded to the origin.");
  counters_.stale = counter(
      "stale", "Stale responses served (max-stale, stale-while-revalidate, stale-if-error).");
  counters_.revalidated =
      counter("revalidated", "Stored responses the origin confirmed with 304 Not Modified.");
  counters_.coalesced =
      counter("coalesced", "Requests that waited for another request's fetch of the same key.");
  counters_.passes = counter("passes", "Requests on cache routes that bypassed the cache.");
  counters_.stores = counter("stores", "Responses stored.");
  counters_.purged = counter("purged", "Objects removed by purge or invalidation.");
  counters_.head_updates =
      counter("head_updates", "Stored GET responses updated by a 200 answer to a HEAD.");
  counters_.disk_hits = counter("disk_hits", "Memory misses answered from the disk tier.");
  counters_.disk_misses =
      counter("disk_misses", "Memory misses the disk tier could not answer either.");
  MemoryStore* store = &store_;
  registry->AddGaugeFunc("capstan_gateway_cache_bytes", "Bytes held by the cache.",
                         [store] { return static_cast<double>(store->stats().bytes); });
  registry->AddGaugeFunc("capstan_gateway_cache_objects", "Responses held by the cache.",
                         [store] { return static_cast<double>(store->stats().objects); });
  registry->AddGaugeFunc("capstan_gateway_cache_evictions_total",
                         "Objects evicted to stay within the memory budget; a counter.",
                         [store] { return static_cast<double>(store->stats().evictions); });
  registry->AddGaugeFunc("capstan_gateway_cache_capacity_bytes", "The cache's memory budget.",
                         [bytes = config.memory] { return static_cast<double>(bytes); });
}

absl::StatusOr<std::shared_ptr<HttpCache>> HttpCache::Create(const CacheConfig& config,
                                                             metrics::Registry* registry) {
  auto cache = std::make_shared<HttpCache>(config, registry);
  if (config.disk_path.empty()) return cache;
  ASSIGN_OR_RETURN(cache->disk_,
                   DiskStore::Open({.dir = config.disk_path, .max_bytes = config.disk_size}));
  // Two readers: a disk read is a few hundred microseconds, and a miss that
  // waits for one costs an origin fetch less.
  cache->disk_readers_ =
      std::make_unique<net::WorkerPool>(net::WorkerPoolOptions{.threads = 2, .name = "cache-disk"});
  cache->RegisterDiskMetrics(registry);
  return cache;
}

void HttpCache::RegisterDiskMetrics(metrics::Registry* registry) {
  DiskStore* disk = disk_.get();
  auto gauge = [registry, disk](const char* name, const char* help, auto field) {
    registry->AddGaugeFunc(absl::StrCat("capstan_gateway_cache_disk_", name), help,
                           [disk, field] { return static_cast<double>(field(disk->stats())); });
  };
  gauge("bytes", "Bytes of the disk tier's files.", [](const DiskStats& s) { return s.bytes; });
  gauge("objects", "Responses held by the disk tier.",
        [](const DiskStats& s) { return s.objects; });
  gauge("writes_total", "Responses written to the disk tier; a counter.",
        [](const DiskStats& s) { return s.writes; });
  gauge("write_errors_total",
        "Disk tier writes that failed (ENOSPC, EIO, ...) and were dropped; a counter.",
        [](const DiskStats& s) { return s.write_errors; });
  gauge("dropped_total", "Disk tier writes dropped because the write queue was full; a counter.",
        [](const DiskStats& s) { return s.dropped; });
  gauge("corrupt_total", "Torn or corrupt disk tier files found and removed; a counter.",
        [](const DiskStats& s) { return s.corrupt; });
  gauge("evictions_total", "Disk tier files removed to stay within its budget; a counter.",
        [](const DiskStats& s) { return s.evictions; });
  gauge("ready", "1 once the disk tier's start-up scan has ended.",
        [](const DiskStats& s) { return s.ready ? 1 : 0; });
  registry->AddGaugeFunc("capstan_gateway_cache_disk_capacity_bytes", "The disk tier's budget.",
                         [bytes = disk->max_bytes()] { return static_cast<double>(bytes); });
}

net::Task<ObjectRef> HttpCache::LoadFromDisk(net::EventLoop* loop, const std::string& key,
                                             const Fields& request, const CacheConfig& settings) {
  uint64_t seq = disk_->Find(key, request);
  if (seq == 0) {
    counters_.disk_misses->Inc();
    co_return nullptr;
  }
  DiskStore* disk = disk_.get();
  auto read = disk_readers_->Run(loop, [disk, seq, &key] { return disk->Read(seq, key); });
  std::shared_ptr<StoredResponse> loaded = co_await read;
  if (loaded == nullptr || !loaded->MatchesVary(request)) {
    counters_.disk_misses->Inc();
    co_return nullptr;
  }
  loaded->cc = ResponseCacheControl(loaded->fields, settings.targeted_fields);
  counters_.disk_hits->Inc();
  ObjectRef object = std::move(loaded);
  store_.Insert(object);  // back in memory: the next hit is a memory hit
  co_return object;
}

void HttpCache::Stored(const ObjectRef& object) {
  if (disk_ != nullptr) disk_->Write(object);
}

size_t HttpCache::RemoveKey(const std::string& key) {
  size_t n = store_.Remove(key);
  if (disk_ != nullptr) n = std::max(n, disk_->Remove(key));
  return n;
}

std::shared_ptr<Fill> HttpCache::BeginFill(const std::string& key, bool* leader) {
  std::lock_guard lock(mu_);
  std::weak_ptr<Fill>& slot = fills_[key];
  if (std::shared_ptr<Fill> existing = slot.lock()) {
    *leader = false;
    return existing;
  }
  auto fill = std::make_shared<Fill>(this, key);
  slot = fill;
  *leader = true;
  return fill;
}

void HttpCache::EndFill(const std::string& key, Fill* fill) {
  std::lock_guard lock(mu_);
  auto it = fills_.find(key);
  if (it == fills_.end()) return;
  std::shared_ptr<Fill> current = it->second.lock();
  if (current == nullptr || current.get() == fill) fills_.erase(it);
}

bool HttpCache::BeginRefresh(const std::string& key) {
  std::lock_guard lock(mu_);
  return refreshing_.emplace(key, true).second;
}

void HttpCache::EndRefresh(const std::string& key) {
  std::lock_guard lock(mu_);
  refreshing_.erase(key);
}

net::HttpResponse HttpCache::HandlePurge(const net::HttpRequest& request) {
  if (request.method != "POST" && request.method != "PURGE") {
    net::HttpResponse r = net::JsonError(405, "method_not_allowed", "use POST or PURGE");
    r.headers.emplace_back("allow", "POST, PURGE");
    return r;
  }
  std::string url, tag;
  bool all = false;
  for (absl::string_view pair : absl::StrSplit(request.query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(pair, absl::MaxSplits('=', 1));
    std::string value;
    if (!net::PercentDecode(std::string_view(kv.second.data(), kv.second.size()), &value)) {
      return net::JsonError(400, "bad_request", "bad percent-encoding in the query");
    }
    if (kv.first == "url") {
      url = value;
    } else if (kv.first == "tag") {
      tag = value;
    } else if (kv.first == "all") {
      all = value == "1" || value == "true";
    } else {
      return net::JsonError(
          400, "bad_request",
          absl::StrCat("unknown parameter '", std::string(kv.first), "': use url=, tag= or all=1"));
    }
  }
  size_t purged = 0;
  if (!url.empty()) {
    std::string_view u = url;
    if (u.starts_with("http://")) {
      u.remove_prefix(7);
    } else if (u.starts_with("https://")) {
      u.remove_prefix(8);
    } else {
      return net::JsonError(400, "bad_request", "url must be absolute: http://HOST[:PORT]/PATH");
    }
    size_t slash = u.find('/');
    std::string_view authority = u.substr(0, slash);
    std::string_view target = slash == std::string_view::npos ? "/" : u.substr(slash);
    size_t q = target.find('?');
    std::string key = q == std::string_view::npos
                          ? PrimaryKey(authority, target, {})
                          : PrimaryKey(authority, target.substr(0, q), target.substr(q + 1));
    purged += RemoveKey(key);
    // The clusters of a split route.
    size_t split = store_.RemoveKeyPrefix(key + "#");
    if (disk_ != nullptr) split = std::max(split, disk_->RemoveKeyPrefix(key + "#"));
    purged += split;
  } else if (!tag.empty()) {
    purged += store_.RemoveTag(tag);
    if (disk_ != nullptr) purged = std::max(purged, disk_->RemoveTag(tag));
  } else if (all) {
    purged += store_.Clear();
    if (disk_ != nullptr) purged = std::max(purged, disk_->Clear());
  } else {
    return net::JsonError(400, "bad_request", "give url=, tag= or all=1");
  }
  counters_.purged->Inc(purged);
  return net::JsonResponse(purged > 0 ? 200 : 404, absl::StrCat("{\"purged\": ", purged, "}\n"));
}

}  // namespace capstan::gateway::cache
