#include "experiments/event_store_dedup.h"

#include <cstdlib>
#include <new>

#include "xxhash.h"

namespace capstan::experiments {
namespace {

// Fixed, so a fingerprint is the same in every process (the table rebuilt
// from the log on open equals the one before).
constexpr uint64_t kFingerprintSeed = 0x636170737461'6e65;

// How far ahead InsertAll prefetches: enough misses in flight to hide
// memory latency, few enough to stay in L1.
constexpr size_t kPrefetchDistance = 16;

}  // namespace

DedupWindow::DedupWindow(size_t window) : window_(window < 1 ? 1 : window) {
  size_t capacity = 16;
  while (capacity * 3 < window_ * 4) capacity *= 2;  // at most 3/4 full
  // The kernel's zero pages, touched only as slots fill (ZeroedArray).
  slots_ = ZeroedArray<uint64_t>(capacity);
  mask_ = capacity - 1;
  ring_ = ZeroedArray<uint64_t>(window_);
}

uint64_t DedupWindow::FingerprintOf(std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), kFingerprintSeed);
}

bool DedupWindow::Contains(uint64_t fingerprint) const {
  const uint64_t stored = Stored(fingerprint);
  for (size_t i = Home(stored);; i = (i + 1) & mask_) {
    if (slots_[i] == stored) return true;
    if (slots_[i] == 0) return false;
  }
}

bool DedupWindow::Insert(uint64_t fingerprint) {
  const uint64_t stored = Stored(fingerprint);
  size_t i = Home(stored);
  for (; slots_[i] != 0; i = (i + 1) & mask_) {
    if (slots_[i] == stored) return false;
  }
  if (size_ == window_) {
    // Forget the oldest. Its slot may sit in our probe run, so find ours again.
    Erase(ring_[ring_head_]);
    ring_[ring_head_] = stored;
    ring_head_ = ring_head_ + 1 == window_ ? 0 : ring_head_ + 1;
    for (i = Home(stored); slots_[i] != 0; i = (i + 1) & mask_) {
    }
  } else {
    size_t newest = ring_head_ + size_;
    if (newest >= window_) newest -= window_;
    ring_[newest] = stored;
    ++size_;
  }
  slots_[i] = stored;
  return true;
}

void DedupWindow::InsertAll(const uint64_t* fingerprints, size_t n, std::vector<uint8_t>* fresh) {
  fresh->resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchDistance < n) {
      __builtin_prefetch(&slots_[Home(Stored(fingerprints[i + kPrefetchDistance]))], 1);
      if (size_ == window_) {
        // The one forgotten kPrefetchDistance inserts from now (if all are new).
        size_t oldest = ring_head_ + kPrefetchDistance;
        if (oldest >= window_) oldest %= window_;
        __builtin_prefetch(&slots_[Home(ring_[oldest])], 1);
      }
    }
    (*fresh)[i] = Insert(fingerprints[i]) ? 1 : 0;
  }
}

void DedupWindow::RollBack(size_t n) {
  for (; n > 0 && size_ > 0; --n) {
    size_t newest = ring_head_ + size_ - 1;
    if (newest >= window_) newest -= window_;
    Erase(ring_[newest]);
    --size_;
  }
}

void DedupWindow::Erase(uint64_t stored) {
  size_t i = Home(stored);
  while (slots_[i] != stored) {
    if (slots_[i] == 0) return;  // not there (cannot happen: the ring mirrors the table)
    i = (i + 1) & mask_;
  }
  // Backward shift: move later members of the run into the hole when their
  // home does not lie cyclically in (hole, their slot].
  size_t hole = i;
  for (size_t j = (i + 1) & mask_; slots_[j] != 0; j = (j + 1) & mask_) {
    size_t home = Home(slots_[j]);
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    hole = j;
  }
  slots_[hole] = 0;
}

}  // namespace capstan::experiments
