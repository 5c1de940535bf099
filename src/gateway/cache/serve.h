// The HTTP cache in the proxy's request path: HttpCache is the process's one
// cache (the memory store, the fills in flight for request coalescing, the
// counters, purge), and ServeCached answers a request of a route with
// `cache: {enabled: true}` — from the store, by revalidating a stored
// response, or by forwarding (proxy.h, Forward) with the response stored as
// it streams to the client. docs/gateway.md, "HTTP cache"; README.md here.
//
//   // proxy.cc, HandleRequest:
//   if (snapshot->cache != nullptr && route->config().cache.enabled)
//     keep = co_await cache::ServeCached(ctx, x, *route, cluster, snapshot->cache);
//
// Thread-safety: HttpCache from any thread (the store and the fill table
// lock; counters are atomic). ServeCached runs on the request's loop; a
// coalesced waiter is resumed on its own loop (EventLoop::Post).
#pragma once

#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/metrics.h"
#include "gateway/cache/disk_store.h"
#include "gateway/cache/store.h"
#include "gateway/config.h"
#include "net/event_loop.h"
#include "net/http_server.h"
#include "net/task.h"
#include "net/worker_pool.h"

namespace capstan::gateway {

struct DownstreamContext;
class DownstreamExchange;
class Route;
class Cluster;

namespace cache {

class HttpCache;

// One upstream fetch that fills a key, and the requests waiting for it
// (request coalescing). The first miss of a key is the leader; later misses
// wait until it completes, then look the store up again: a stored response
// answers them; otherwise (not cacheable, too large, failed) each goes
// upstream itself.
class Fill {
 public:
  Fill(HttpCache* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
  // Ends the fill (idempotent) and resumes every waiter on its loop.
  void Complete();

  struct Awaiter {
    Fill* fill;
    net::EventLoop* loop;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
  };
  Awaiter Wait(net::EventLoop* loop) { return Awaiter{this, loop}; }
  // The response the fill stored or revalidated, if any: the waiters use
  // it even when it is already stale (max-age=0, no-cache): it is the
  // origin's answer given after they asked.
  void set_result(ObjectRef result) {
    std::lock_guard lock(mu_);
    result_ = std::move(result);
  }
  ObjectRef result() {
    std::lock_guard lock(mu_);
    return result_;
  }

 private:
  HttpCache* owner_;
  std::string key_;
  std::mutex mu_;
  bool done_ = false;
  ObjectRef result_;
  std::vector<std::pair<net::EventLoop*, std::coroutine_handle<>>> waiters_;
};

class HttpCache {
 public:
  // The cache `config` describes, with its disk tier when it has one (the
  // directory is opened and locked here; its scan runs in the background).
  static absl::StatusOr<std::shared_ptr<HttpCache>> Create(const CacheConfig& config,
                                                           metrics::Registry* registry);
  // Memory only (config.disk_path is not read).
  HttpCache(const CacheConfig& config, metrics::Registry* registry);
  HttpCache(const HttpCache&) = delete;
  HttpCache& operator=(const HttpCache&) = delete;

  MemoryStore& store() { return store_; }
  // The disk tier, or null.
  DiskStore* disk() { return disk_.get(); }
  // A memory miss looked up on disk: read on a worker thread (the loop goes
  // on), checked, put back in memory. Null when the disk has no match.
  net::Task<ObjectRef> LoadFromDisk(net::EventLoop* loop, const std::string& key,
                                    const Fields& request, const CacheConfig& settings);
  // A stored (or revalidated) object: to the disk tier too, if any.
  void Stored(const ObjectRef& object);
  // Every variant of `key`, in memory and on disk; returns how many (the
  // larger of the two counts: most objects are in both).
  size_t RemoveKey(const std::string& key);
  // Seconds on the cache's clock (the system clock; tests may replace it).
  int64_t Now() const { return clock_(); }
  void set_clock(std::function<int64_t()> clock) { clock_ = std::move(clock); }
  size_t max_object_size() const { return max_object_size_; }
  const FreshnessOptions& freshness() const { return freshness_; }

  // Coalescing: the fill for `key`, and whether the caller leads it (a new
  // fill) or should wait for it.
  std::shared_ptr<Fill> BeginFill(const std::string& key, bool* leader);
  // Whether a background refresh of `key` may start (none running); the
  // caller calls EndRefresh when it ends.
  bool BeginRefresh(const std::string& key);
  void EndRefresh(const std::string& key);

  // The admin listener's /cache/purge (POST or PURGE):
  //   ?url=http://HOST[:PORT]/PATH[?QUERY]  every variant of that URL
  //   ?tag=TAG                             every object tagged TAG
  //   ?all=1                               everything
  // Answers {"purged": N} (404 with {"purged": 0} when nothing matched).
  net::HttpResponse HandlePurge(const net::HttpRequest& request);

  struct Counters {
    metrics::Counter* hits;         // fresh (or allowed stale) from the store
    metrics::Counter* misses;       // forwarded and, if cacheable, stored
    metrics::Counter* stale;        // stale served (max-stale, SWR, stale-if-error)
    metrics::Counter* revalidated;  // a 304 from the origin refreshed a stored response
    metrics::Counter* coalesced;    // waited for another request's fetch
    metrics::Counter* passes;       // not cacheable by method or request (HEAD miss, no-store, ...)
    metrics::Counter* stores;       // responses stored
    metrics::Counter* purged;       // objects removed by purge or invalidation
    metrics::Counter* head_updates;  // a HEAD's 200 updated a stored GET (RFC 9111 §4.3.5)
    metrics::Counter* disk_hits;     // memory misses answered by the disk tier
    metrics::Counter* disk_misses;   // memory misses the disk tier did not have either
  };
  const Counters& counters() const { return counters_; }

 private:
  friend class Fill;
  void EndFill(const std::string& key, Fill* fill);

  void RegisterDiskMetrics(metrics::Registry* registry);

  MemoryStore store_;
  std::unique_ptr<DiskStore> disk_;
  // Disk reads (blocking) run here, never on a loop.
  std::unique_ptr<net::WorkerPool> disk_readers_;
  size_t max_object_size_;
  FreshnessOptions freshness_;
  std::function<int64_t()> clock_;
  Counters counters_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::weak_ptr<Fill>> fills_;
  absl::flat_hash_map<std::string, bool> refreshing_;
};

// Answers one request of a cache-enabled route. Returns keep-alive, as
// Forward does.
net::Task<bool> ServeCached(DownstreamContext& ctx, DownstreamExchange& x, const Route& route,
                            Cluster& cluster, std::shared_ptr<HttpCache> cache);

}  // namespace cache
}  // namespace capstan::gateway
