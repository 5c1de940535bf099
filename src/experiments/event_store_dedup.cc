#include "experiments/event_store_dedup.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "xxhash.h"

namespace capstan::experiments {
namespace {

// Fixed, so a fingerprint is the same in every process (the tables rebuilt
// from the log on open hold the same fingerprints as before).
constexpr uint64_t kFingerprintSeed = 0x636170737461'6e65;

// How far ahead InsertAll prefetches: enough misses in flight to hide
// memory latency, few enough to stay in L1.
constexpr size_t kPrefetchDistance = 16;

}  // namespace

DedupWindow::DedupWindow(size_t window) : window_(window < 1 ? 1 : window) {
  size_t capacity = 16;
  while (capacity * 3 < window_ * 4) capacity *= 2;  // at most 3/4 full
  mask_ = capacity - 1;
  // The kernel's zero pages, touched only as slots fill (ZeroedArray).
  for (Generation& g : generations_) g.slots = ZeroedArray<uint64_t>(capacity);
}

uint64_t DedupWindow::FingerprintOf(std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), kFingerprintSeed);
}

bool DedupWindow::Find(const Generation& g, uint64_t stored) const {
  for (size_t i = Home(stored);; i = (i + 1) & mask_) {
    if (g.slots[i] == stored) return true;
    if (g.slots[i] == 0) return false;
  }
}

bool DedupWindow::Contains(uint64_t fingerprint) const {
  const uint64_t stored = Stored(fingerprint);
  return Find(generations_[0], stored) || Find(generations_[1], stored);
}

bool DedupWindow::Insert(uint64_t fingerprint) {
  const uint64_t stored = Stored(fingerprint);
  if (Find(previous(), stored)) return false;
  Generation& g = current();
  size_t i = Home(stored);
  for (; g.slots[i] != 0; i = (i + 1) & mask_) {
    if (g.slots[i] == stored) return false;
  }
  g.slots[i] = stored;
  g.written = true;
  if (++g.size == window_) TurnOver();
  return true;
}

void DedupWindow::TurnOver() {
  current_ = 1 - current_;
  Generation& emptied = current();
  // Written over in place: a fresh mapping would fault every page in again.
  // One never written (the first turnover's) is the kernel's zeros still.
  if (emptied.written) std::fill(emptied.slots.begin(), emptied.slots.end(), uint64_t{0});
  emptied.size = 0;
  emptied.written = false;
}

void DedupWindow::InsertAll(const uint64_t* fingerprints, size_t n, std::vector<uint8_t>* fresh) {
  fresh->resize(n);
  last_new_.clear();
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchDistance < n) {
      const size_t home = Home(Stored(fingerprints[i + kPrefetchDistance]));
      __builtin_prefetch(&generations_[0].slots[home], 1);
      __builtin_prefetch(&generations_[1].slots[home], 1);
    }
    const bool is_new = Insert(fingerprints[i]);
    (*fresh)[i] = is_new ? 1 : 0;
    if (is_new) last_new_.push_back(Stored(fingerprints[i]));
  }
}

void DedupWindow::RollBack(size_t n) {
  for (; n > 0 && !last_new_.empty(); --n) {
    const uint64_t stored = last_new_.back();
    last_new_.pop_back();
    // In the current generation, or in the previous one if the inserts
    // turned it over on the way.
    if (!Erase(current(), stored)) Erase(generations_[1 - current_], stored);
  }
}

bool DedupWindow::Erase(Generation& g, uint64_t stored) {
  size_t i = Home(stored);
  while (g.slots[i] != stored) {
    if (g.slots[i] == 0) return false;
    i = (i + 1) & mask_;
  }
  // Backward shift: move later members of the run into the hole when their
  // home does not lie cyclically in (hole, their slot].
  size_t hole = i;
  for (size_t j = (i + 1) & mask_; g.slots[j] != 0; j = (j + 1) & mask_) {
    size_t home = Home(g.slots[j]);
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    g.slots[hole] = g.slots[j];
    hole = j;
  }
  g.slots[hole] = 0;
  --g.size;
  return true;
}

}  // namespace capstan::experiments
