// The memory store of the gateway's HTTP cache: one logical cache per
// process, sharded by the primary key's hash (each shard a mutex, a map of
// primary keys to their variants, and an eviction policy over a byte
// budget). A stored response is immutable once inserted and handed out as
// a shared_ptr: readers on any loop use it without the lock, and its body is
// a net::Buffer whose blocks are shared (refcounted) by every hit — never
// copied per hit.
//
//   MemoryStore store({.max_bytes = 256 << 20});
//   store.Insert(std::make_shared<StoredResponse>(...));
//   if (ObjectRef hit = store.Lookup(key, request_fields)) { ... hit->body.Share() ... }
//
// Why shards and not a cache per loop: a hit on any loop (a client's next
// connection lands on whichever loop accepts it), one copy per object, one
// budget. The lock is held for a hash lookup and a refcount; with 16 shards
// two loops rarely meet on one.
//
// Thread-safety: every method from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gateway/cache/cache_control.h"
#include "gateway/cache/eviction.h"
#include "gateway/cache/semantics.h"
#include "net/buffer.h"

namespace capstan::gateway::cache {

// One stored response: a variant of a primary key.
struct StoredResponse {
  std::string key;  // PrimaryKey(...)
  // The request's normalised values of the response's Vary names, in order.
  std::vector<std::pair<std::string, std::string>> vary;
  int status = 200;
  Fields fields;                  // the response's fields as stored (no hop-by-hop fields)
  net::Buffer body;               // the complete body
  CacheControl cc;                // parsed from `fields`
  StoredTimes times;              // response time, corrected initial age, lifetime
  std::vector<std::string> tags;  // from the configured tag fields (purge by tag)
  int64_t stored_at = 0;

  // Bytes charged against the budget: body, fields, key, and a fixed
  // overhead for the structure and its map entry.
  size_t Charge() const;
  // Whether this variant answers a request with `request` fields.
  bool MatchesVary(const Fields& request) const;
};
using ObjectRef = std::shared_ptr<const StoredResponse>;

struct StoreOptions {
  size_t max_bytes = 256 << 20;
  EvictionKind eviction = EvictionKind::kS3Fifo;
  // 0: chosen from the budget (16, fewer for a small budget so that one
  // shard still holds a large object).
  size_t shards = 0;
  // Variants kept per primary key (Vary); the oldest goes past it.
  size_t max_variants = 16;
};

struct StoreStats {
  uint64_t bytes = 0;
  uint64_t objects = 0;
  uint64_t evictions = 0;
};

class MemoryStore {
 public:
  explicit MemoryStore(StoreOptions options);
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // The newest variant of `key` whose Vary values match `request`.
  ObjectRef Lookup(const std::string& key, const Fields& request);
  // Stores `object`, replacing the variant with the same Vary values.
  // False when it cannot fit (larger than a shard's budget).
  bool Insert(ObjectRef object);
  // Drops every variant of `key`; returns how many.
  size_t Remove(const std::string& key);
  // Drops every object tagged `tag`; returns how many. Scans every shard
  // (an admin operation: ~1 ms per 100k objects).
  size_t RemoveTag(const std::string& tag);
  // Drops every object whose primary key starts with `prefix`; returns how
  // many. Scans every shard, like RemoveTag.
  size_t RemoveKeyPrefix(const std::string& prefix);
  // Drops everything; returns how many objects.
  size_t Clear();
  StoreStats stats() const;
  size_t max_object_bytes() const;  // a shard's budget

 private:
  struct Bucket {
    std::string key;
    std::vector<ObjectRef> variants;  // newest first
    size_t charge = 0;
  };
  struct Shard {
    std::mutex mu;
    absl::flat_hash_map<uint64_t, Bucket> buckets;
    std::unique_ptr<EvictionPolicy> policy;
    uint64_t objects = 0;
  };
  Shard& ShardFor(uint64_t hash) { return *shards_[hash % shards_.size()]; }
  // REQUIRES: shard.mu held.
  void DropBucket(Shard& shard, uint64_t hash);
  // Drops the objects `doomed` selects, in every shard; returns how many.
  size_t RemoveIf(const std::function<bool(const StoredResponse&)>& doomed);

  StoreOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace capstan::gateway::cache
