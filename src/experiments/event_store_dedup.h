// DedupWindow: the event store's memory of the idempotency keys of at least
// the last `window` accepted events (event_store.h), as 64-bit fingerprints
// in two generations of a flat open-addressing table. New keys go into the
// current generation; when it holds `window` keys it becomes the previous one
// and the previous one, emptied, the current. So a key is remembered until
// between `window` and 2 x `window` - 1 newer keys have come, and nothing is
// ever deleted key by key: a FIFO of exactly `window` keys cost, per insert
// into a full window, a second random access and a backward-shift delete to
// forget the oldest (~0.06-0.1 us of the writer's CPU per event).
//
// Why 64-bit fingerprints and not the keys: 8 bytes per key instead of a
// string each, and one cache miss per lookup in each generation. The price
// is a false duplicate: a NEW key whose fingerprint equals one of the keys
// remembered is taken for a duplicate (and not counted). With XXH3-64 and
// at most 2W = 20M keys remembered that is at most 2W / 2^64 ≈ 1.1e-12 per
// event — about one event in 1e12, one every few weeks at a sustained 1M
// events/s. That is below the rate at which disks return a bad sector
// unnoticed (~1e-15 per bit, ~5e-13 per 64-byte event) and far below
// anything a statistic over the events could see;
// docs/experiments-events.md states it with the limits. The fingerprint is
// seeded with a constant, so the table rebuilt from the log on open holds
// the same fingerprints.
//
//   DedupWindow dedup(10'000'000);
//   uint64_t f = DedupWindow::FingerprintOf(event.key);
//   if (!dedup.Insert(f)) { /* seen: a duplicate */ }
//   dedup.InsertAll(fingerprints, n, &fresh);
//   dedup.RollBack(k);  // the last InsertAll's group was not written
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
  // `window` >= 1 keys remembered at least. Memory: two tables of 8-byte
  // slots, each at most 3/4 full (a power of two): 256 MiB for 10M keys,
  // zero pages from mmap touched as keys arrive, in huge pages where the
  // kernel allows (fewer TLB misses on random access).
  explicit DedupWindow(size_t window);

  static uint64_t FingerprintOf(std::string_view key);

  // Whether `fingerprint` is new. A new one is remembered (in the current
  // generation, which turns over when it holds `window` keys).
  bool Insert(uint64_t fingerprint);
  // Insert of each fingerprint in order; (*fresh)[i] says whether the i-th
  // was new. The same answers as n Inserts, faster: the tables are far
  // larger than the caches, so it prefetches the slots of the fingerprints a
  // few places ahead while it works on the current one.
  void InsertAll(const uint64_t* fingerprints, size_t n, std::vector<uint8_t>* fresh);
  bool Contains(uint64_t fingerprint) const;
  // Forgets the last `n` new fingerprints of the last InsertAll (their group
  // was not written). If those inserts turned the generations over, the
  // keys the turnover forgot stay forgotten: the window is then short by up
  // to n keys until refilled. REQUIRES: n <= the new ones InsertAll found.
  void RollBack(size_t n);

  // Keys remembered: `window` to 2 x `window` - 1 once a window has come.
  size_t size() const { return generations_[0].size + generations_[1].size; }
  size_t window() const { return window_; }
  size_t memory_bytes() const { return 2 * (mask_ + 1) * sizeof(uint64_t); }

 private:
  // Linear probing, no tombstones (RollBack's rare delete shifts back).
  struct Generation {
    ZeroedArray<uint64_t> slots;
    size_t size = 0;
    bool written = false;  // since it was last emptied (RollBack may leave it empty but written)
  };

  // 0 marks an empty slot; a fingerprint of 0 is stored as 1.
  static uint64_t Stored(uint64_t fingerprint) { return fingerprint == 0 ? 1 : fingerprint; }
  size_t Home(uint64_t stored) const { return static_cast<size_t>(stored) & mask_; }
  bool Find(const Generation& g, uint64_t stored) const;
  // Removes `stored` from `g` if it is there (backward shift).
  bool Erase(Generation& g, uint64_t stored);
  // The current generation becomes the previous one; the previous one,
  // emptied in place (its pages stay mapped), the current.
  void TurnOver();
  Generation& current() { return generations_[current_]; }
  const Generation& previous() const { return generations_[1 - current_]; }

  size_t window_;
  size_t mask_ = 0;
  Generation generations_[2];
  int current_ = 0;
  // What the last InsertAll remembered, in order (for RollBack).
  std::vector<uint64_t> last_new_;
};

}  // namespace capstan::experiments
