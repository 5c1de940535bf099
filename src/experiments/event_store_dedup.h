// DedupWindow: the event store's memory of the idempotency keys of the last
// `window` accepted events (event_store.h), as 64-bit fingerprints in one
// flat open-addressing table plus a ring that remembers their order.
//
// Why 64-bit fingerprints and not the keys: ~21 bytes per key instead of a
// string each, and one cache miss per lookup. The price is a false
// duplicate: a NEW key whose fingerprint equals one of the `window` keys
// remembered is taken for a duplicate (and not counted). With XXH3-64 and a
// full window of W = 10M keys that is W / 2^64 ≈ 5.4e-13 per event — one
// event in ~2e12, about one a month at a sustained 1M events/s. That is
// below the rate at which disks return a bad sector unnoticed (~1e-15 per
// bit, ~5e-13 per 64-byte event) and far below anything a statistic over
// the events could see; docs/experiments-events.md states it with the
// limits. The fingerprint is seeded with a constant, so the table rebuilt
// from the log on open is the same table.
//
//   DedupWindow dedup(10'000'000);
//   uint64_t f = DedupWindow::FingerprintOf(event.key);
//   if (!dedup.Insert(f)) { /* seen: a duplicate */ }
//   dedup.RollBack(n);  // the group of the last n inserts was not written
//
// Thread-safety: none (the store's writer thread owns it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "base/zeroed_array.h"

namespace capstan::experiments {

class DedupWindow {
 public:
  // `window` >= 1 keys remembered. Memory: a table of 8-byte slots, at
  // most 3/4 full (a power of two), and a ring of 8 bytes per key: 208 MiB
  // for 10M keys, zero pages from mmap touched as keys arrive, in huge pages
  // where the kernel allows (fewer TLB misses on random access).
  explicit DedupWindow(size_t window);

  static uint64_t FingerprintOf(std::string_view key);

  // Whether `fingerprint` is new. A new one is remembered; when the window
  // is full, the oldest remembered one is forgotten first.
  bool Insert(uint64_t fingerprint);
  // Insert of each fingerprint in order; (*fresh)[i] says whether the i-th
  // was new. The same answers as n Inserts, faster: the table is far larger
  // than the caches, so it prefetches the slots of the fingerprints a few
  // places ahead (and of the oldest ones it will forget) while it works on
  // the current one.
  void InsertAll(const uint64_t* fingerprints, size_t n, std::vector<uint8_t>* fresh);
  bool Contains(uint64_t fingerprint) const;
  // Forgets the last `n` inserted fingerprints (their group was not
  // written). The oldest ones those inserts pushed out of a full window stay
  // forgotten: the window is then short by up to n keys until refilled.
  // REQUIRES: n <= size().
  void RollBack(size_t n);

  size_t size() const { return size_; }
  size_t window() const { return window_; }
  size_t memory_bytes() const { return (mask_ + 1 + window_) * sizeof(uint64_t); }

 private:
  // 0 marks an empty slot; a fingerprint of 0 is stored as 1.
  static uint64_t Stored(uint64_t fingerprint) { return fingerprint == 0 ? 1 : fingerprint; }
  size_t Home(uint64_t stored) const { return static_cast<size_t>(stored) & mask_; }
  void Erase(uint64_t stored);

  size_t window_;
  // Linear probing, no tombstones (backward-shift delete).
  ZeroedArray<uint64_t> slots_;
  size_t mask_ = 0;
  // The remembered fingerprints in insertion order: ring_[ring_head_] is
  // the oldest, ring_[(ring_head_ + size_ - 1) % window_] the newest.
  ZeroedArray<uint64_t> ring_;
  size_t ring_head_ = 0;
  size_t size_ = 0;
};

}  // namespace capstan::experiments
