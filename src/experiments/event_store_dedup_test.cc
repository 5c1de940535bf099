// DedupWindow against a reference (a set and a queue of the window's keys):
// fingerprints built to share their home slot and to wrap around the
// table's end, so linear probing, the backward-shift delete and eviction of
// the oldest keys are all exercised; InsertAll answers as Insert does;
// RollBack forgets exactly the newest keys.
#include "experiments/event_store_dedup.h"

#include <deque>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

// The reference: what the window must remember.
class ReferenceWindow {
 public:
  explicit ReferenceWindow(size_t window) : window_(window) {}
  bool Insert(uint64_t f) {
    if (f == 0) f = 1;  // as DedupWindow stores it
    if (keys_.contains(f)) return false;
    if (order_.size() == window_) {
      keys_.erase(order_.front());
      order_.pop_front();
    }
    keys_.insert(f);
    order_.push_back(f);
    return true;
  }
  void RollBack(size_t n) {
    for (; n > 0 && !order_.empty(); --n) {
      keys_.erase(order_.back());
      order_.pop_back();
    }
  }
  size_t size() const { return order_.size(); }
  const std::set<uint64_t>& keys() const { return keys_; }

 private:
  size_t window_;
  std::set<uint64_t> keys_;
  std::deque<uint64_t> order_;
};

// Fingerprints from a small pool whose low bits (the home slot) collide a
// lot: window 50 makes a 128-slot table; homes fall in 8 slots, half of
// them at the table's end (so runs wrap around to slot 0).
uint64_t CollidingFingerprint(std::mt19937_64& rng) {
  static const uint64_t kHomes[] = {0, 1, 2, 60, 124, 125, 126, 127};
  uint64_t high = (rng() % 300) << 20;  // 300 distinct fingerprints per home
  return high | kHomes[rng() % 8];
}

TEST(DedupWindow, AgreesWithAReferenceUnderCollisionsEvictionAndRollBack) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    DedupWindow window(50);
    ReferenceWindow reference(50);
    for (int step = 0; step < 5000; ++step) {
      if (rng() % 50 == 0) {
        size_t n = rng() % (reference.size() + 1);
        window.RollBack(n);
        reference.RollBack(n);
      } else {
        uint64_t f = CollidingFingerprint(rng);
        ASSERT_EQ(window.Insert(f), reference.Insert(f)) << "seed " << seed << " step " << step;
      }
      ASSERT_EQ(window.size(), reference.size());
      if (step % 97 == 0) {
        // Every remembered key is findable, and nothing else of the pool is.
        for (uint64_t f : reference.keys()) ASSERT_TRUE(window.Contains(f)) << f;
        std::mt19937_64 probe(seed * 31 + static_cast<uint64_t>(step));
        for (int i = 0; i < 200; ++i) {
          uint64_t f = CollidingFingerprint(probe);
          ASSERT_EQ(window.Contains(f), reference.keys().contains(f == 0 ? 1 : f)) << f;
        }
      }
    }
  }
}

TEST(DedupWindow, InsertAllAnswersAsInsertDoes) {
  std::mt19937_64 rng(5);
  DedupWindow one_by_one(1000);
  DedupWindow batched(1000);
  std::vector<uint64_t> batch;
  std::vector<uint8_t> fresh;
  for (int round = 0; round < 40; ++round) {
    batch.clear();
    for (int i = 0; i < 300; ++i) {
      // Repeats within the batch and across batches, past the window too.
      batch.push_back(rng() % 3000 == 0 ? 0
                                        : DedupWindow::FingerprintOf(std::to_string(rng() % 3000)));
    }
    batched.InsertAll(batch.data(), batch.size(), &fresh);
    ASSERT_EQ(fresh.size(), batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      ASSERT_EQ(static_cast<bool>(fresh[i]), one_by_one.Insert(batch[i])) << round << " " << i;
    }
  }
  EXPECT_EQ(batched.size(), 1000u);
}

TEST(DedupWindow, FingerprintsAreStableAcrossProcesses) {
  // The table is rebuilt from the log on open: the same key must give the
  // same fingerprint in every process (a fixed seed, no per-process salt).
  EXPECT_EQ(DedupWindow::FingerprintOf("k1"), DedupWindow::FingerprintOf(std::string("k1")));
  EXPECT_EQ(DedupWindow::FingerprintOf("k1"), 0xa1a9faa4f2cf4529ull)
      << std::hex << DedupWindow::FingerprintOf("k1");
  EXPECT_NE(DedupWindow::FingerprintOf("k1"), DedupWindow::FingerprintOf("k2"));
}

}  // namespace
}  // namespace capstan::experiments
