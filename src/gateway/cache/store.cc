#include "gateway/cache/store.h"

#include <algorithm>

#include "absl/hash/hash.h"

namespace capstan::gateway::cache {
namespace {

constexpr size_t kObjectOverhead = 256;

uint64_t Hash(const std::string& key) { return absl::HashOf(key); }

}  // namespace

size_t StoredResponse::Charge() const {
  size_t vary_bytes = 0;
  for (const auto& [name, value] : vary) vary_bytes += name.size() + value.size();
  size_t tag_bytes = 0;
  for (const std::string& t : tags) tag_bytes += t.size();
  return body.size() + fields.SerializedSize() + key.size() + vary_bytes + tag_bytes +
         kObjectOverhead;
}

bool StoredResponse::MatchesVary(const Fields& request) const {
  for (const auto& [name, value] : vary) {
    if (NormalizedVaryValue(request, name) != value) return false;
  }
  return true;
}

MemoryStore::MemoryStore(StoreOptions options) : options_(options) {
  size_t shards = options_.shards;
  if (shards == 0) {
    // At least 8 MiB per shard (the default max object size fits), at most 16.
    shards = std::clamp<size_t>(options_.max_bytes / (8 << 20), 1, 16);
  }
  for (size_t i = 0; i < shards; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->policy = MakeEvictionPolicy(options_.eviction, options_.max_bytes / shards);
    shards_.push_back(std::move(shard));
  }
}

size_t MemoryStore::max_object_bytes() const { return options_.max_bytes / shards_.size(); }

ObjectRef MemoryStore::Lookup(const std::string& key, const Fields& request) {
  uint64_t h = Hash(key);
  Shard& shard = ShardFor(h);
  std::vector<ObjectRef> variants;
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.buckets.find(h);
    if (it == shard.buckets.end() || it->second.key != key) return nullptr;
    shard.policy->Access(h);
    if (it->second.variants.size() == 1 && it->second.variants[0]->vary.empty()) {
      return it->second.variants[0];
    }
    variants = it->second.variants;
  }
  // Vary matching outside the lock (it normalises request fields).
  for (const ObjectRef& v : variants) {
    if (v->MatchesVary(request)) return v;
  }
  return nullptr;
}

void MemoryStore::DropBucket(Shard& shard, uint64_t hash) {
  auto it = shard.buckets.find(hash);
  if (it == shard.buckets.end()) return;
  shard.objects -= it->second.variants.size();
  shard.buckets.erase(it);
}

bool MemoryStore::Insert(ObjectRef object) {
  uint64_t h = Hash(object->key);
  Shard& shard = ShardFor(h);
  size_t charge = object->Charge();
  std::vector<uint64_t> evicted;
  std::vector<ObjectRef> released;  // destroyed outside the lock
  bool stored = false;
  {
    std::lock_guard lock(shard.mu);
    Bucket& bucket = shard.buckets[h];
    if (bucket.key != object->key) {
      // A new key (or, at 2^-64, another key with the same hash: replaced).
      for (ObjectRef& v : bucket.variants) released.push_back(std::move(v));
      shard.objects -= bucket.variants.size();
      bucket.variants.clear();
      bucket.charge = 0;
      bucket.key = object->key;
    }
    for (auto it = bucket.variants.begin(); it != bucket.variants.end(); ++it) {
      if ((*it)->vary == object->vary) {
        bucket.charge -= (*it)->Charge();
        released.push_back(std::move(*it));
        bucket.variants.erase(it);
        --shard.objects;
        break;
      }
    }
    if (bucket.variants.size() >= options_.max_variants) {
      bucket.charge -= bucket.variants.back()->Charge();
      released.push_back(std::move(bucket.variants.back()));
      bucket.variants.pop_back();
      --shard.objects;
    }
    bucket.variants.insert(bucket.variants.begin(), object);
    bucket.charge += charge;
    ++shard.objects;
    shard.policy->Insert(h, bucket.charge, &evicted);
    stored = true;
    for (uint64_t victim : evicted) {
      if (victim == h) stored = false;
      auto it = shard.buckets.find(victim);
      if (it == shard.buckets.end()) continue;
      for (ObjectRef& v : it->second.variants) released.push_back(std::move(v));
      DropBucket(shard, victim);
    }
  }
  evictions_.fetch_add(evicted.size() - (stored ? 0 : 1), std::memory_order_relaxed);
  return stored;
}

size_t MemoryStore::Remove(const std::string& key) {
  uint64_t h = Hash(key);
  Shard& shard = ShardFor(h);
  std::vector<ObjectRef> released;
  std::lock_guard lock(shard.mu);
  auto it = shard.buckets.find(h);
  if (it == shard.buckets.end() || it->second.key != key) return 0;
  size_t n = it->second.variants.size();
  shard.objects -= n;
  released = std::move(it->second.variants);
  shard.buckets.erase(it);
  shard.policy->Erase(h);
  return n;
}

size_t MemoryStore::RemoveTag(const std::string& tag) {
  return RemoveIf([&tag](const StoredResponse& v) {
    return std::find(v.tags.begin(), v.tags.end(), tag) != v.tags.end();
  });
}

size_t MemoryStore::RemoveKeyPrefix(const std::string& prefix) {
  return RemoveIf([&prefix](const StoredResponse& v) { return v.key.starts_with(prefix); });
}

size_t MemoryStore::RemoveIf(const std::function<bool(const StoredResponse&)>& doomed) {
  size_t removed = 0;
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    std::vector<ObjectRef> released;
    std::lock_guard lock(shard.mu);
    for (auto it = shard.buckets.begin(); it != shard.buckets.end();) {
      Bucket& b = it->second;
      size_t before = b.variants.size();
      for (const ObjectRef& v : b.variants) {
        if (doomed(*v)) {
          b.charge -= v->Charge();
          released.push_back(v);
        }
      }
      b.variants.erase(std::remove_if(b.variants.begin(), b.variants.end(),
                                      [&](const ObjectRef& v) { return doomed(*v); }),
                       b.variants.end());
      size_t gone = before - b.variants.size();
      removed += gone;
      shard.objects -= gone;
      if (b.variants.empty()) {
        shard.policy->Erase(it->first);
        shard.buckets.erase(it++);
      } else {
        if (gone > 0) {
          // The smaller charge; nothing is evicted by a shrink.
          std::vector<uint64_t> evicted;
          shard.policy->Insert(it->first, b.charge, &evicted);
        }
        ++it;
      }
    }
  }
  return removed;
}

size_t MemoryStore::Clear() {
  size_t removed = 0;
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    std::lock_guard lock(shard.mu);
    for (auto& [hash, bucket] : shard.buckets) shard.policy->Erase(hash);
    removed += shard.objects;
    shard.objects = 0;
    shard.buckets.clear();
  }
  return removed;
}

StoreStats MemoryStore::stats() const {
  StoreStats s;
  for (const auto& shard_ptr : shards_) {
    std::lock_guard lock(shard_ptr->mu);
    s.bytes += shard_ptr->policy->bytes();
    s.objects += shard_ptr->objects;
  }
  s.evictions = evictions_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace capstan::gateway::cache
