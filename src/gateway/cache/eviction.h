// Eviction policies over byte-charged entries named by 64-bit ids, shared
// by the memory store (store.h) and the simulator that chose between them
// (eviction_sim.cc; results in README.md).
//
//   auto policy = MakeEvictionPolicy(EvictionKind::kS3Fifo, 64 << 20);
//   std::vector<uint64_t> evicted;
//   policy->Insert(id, bytes, &evicted);   // ids to drop from the store
//   policy->Access(id);                    // on a hit
//
// S3-FIFO (Yang et al., SOSP'23): a small FIFO (10% of the bytes) takes new
// entries; one that is hit before it leaves the small queue moves to the
// main FIFO, others leave and are remembered in a ghost FIFO (ids only), so
// that their next insertion goes straight to main. Main is a FIFO with
// reinsertion (a 2-bit frequency, CLOCK-like). A hit only bumps the counter,
// never relinks a list. LRU is the baseline.
//
// Thread-safety: none; the store holds its shard's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace capstan::gateway::cache {

enum class EvictionKind { kLru, kS3Fifo, kTinyLfu };

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // Adds (or replaces) an entry; appends the ids evicted to make room,
  // possibly `id` itself (an entry larger than the capacity, or one the
  // admission filter refuses). REQUIRES: `evicted` is not null.
  virtual void Insert(uint64_t id, size_t charge, std::vector<uint64_t>* evicted) = 0;
  // A hit.
  virtual void Access(uint64_t id) = 0;
  // Drops an entry (purged, invalidated, replaced by the store); no-op when absent.
  virtual void Erase(uint64_t id) = 0;
  virtual size_t bytes() const = 0;
  virtual size_t entries() const = 0;
  virtual size_t capacity() const = 0;
};

std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(EvictionKind kind, size_t capacity_bytes);
std::string_view EvictionKindName(EvictionKind kind);

}  // namespace capstan::gateway::cache
