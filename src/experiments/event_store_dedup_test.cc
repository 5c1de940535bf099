// DedupWindow against a reference (two generations of sets): fingerprints
// built to share their home slot and to wrap around the table's end, so
// linear probing, the generations' turnover and RollBack's backward-shift
// delete are all exercised; InsertAll answers as Insert does; RollBack
// forgets exactly the newest keys of the last InsertAll; every one of the
// last `window` keys is remembered, whatever the turnovers.
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
    if (current_.contains(f) || previous_.contains(f)) return false;
    current_.insert(f);
    if (current_.size() == window_) {
      previous_ = std::move(current_);
      current_.clear();
    }
    return true;
  }
  std::vector<uint8_t> InsertAll(const std::vector<uint64_t>& batch) {
    std::vector<uint8_t> fresh;
    last_new_.clear();
    for (uint64_t f : batch) {
      fresh.push_back(Insert(f) ? 1 : 0);
      if (fresh.back()) last_new_.push_back(f == 0 ? 1 : f);
    }
    return fresh;
  }
  void RollBack(size_t n) {
    for (; n > 0 && !last_new_.empty(); --n) {
      if (current_.erase(last_new_.back()) == 0) previous_.erase(last_new_.back());
      last_new_.pop_back();
    }
  }
  size_t size() const { return current_.size() + previous_.size(); }
  size_t new_in_last_batch() const { return last_new_.size(); }
  bool Contains(uint64_t f) const {
    if (f == 0) f = 1;
    return current_.contains(f) || previous_.contains(f);
  }

 private:
  size_t window_;
  std::set<uint64_t> current_;
  std::set<uint64_t> previous_;
  std::vector<uint64_t> last_new_;
};

// Fingerprints from a small pool whose low bits (the home slot) collide a
// lot: window 50 makes 128-slot tables; homes fall in 8 slots, half of
// them at the table's end (so runs wrap around to slot 0).
uint64_t CollidingFingerprint(std::mt19937_64& rng) {
  static const uint64_t kHomes[] = {0, 1, 2, 60, 124, 125, 126, 127};
  uint64_t high = (rng() % 300) << 20;  // 300 distinct fingerprints per home
  return high | kHomes[rng() % 8];
}

TEST(DedupWindow, AgreesWithAReferenceUnderCollisionsTurnoversAndRollBack) {
  constexpr size_t kWindow = 50;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    DedupWindow window(kWindow);
    ReferenceWindow reference(kWindow);
    std::vector<uint64_t> batch;
    std::vector<uint8_t> fresh;
    for (int step = 0; step < 2000; ++step) {
      batch.clear();
      const size_t n = 1 + rng() % 12;
      for (size_t i = 0; i < n; ++i) batch.push_back(CollidingFingerprint(rng));
      window.InsertAll(batch.data(), batch.size(), &fresh);
      ASSERT_EQ(fresh, reference.InsertAll(batch)) << "seed " << seed << " step " << step;
      if (rng() % 20 == 0) {
        const size_t k = rng() % (reference.new_in_last_batch() + 1);
        window.RollBack(k);
        reference.RollBack(k);
      }
      ASSERT_EQ(window.size(), reference.size()) << "seed " << seed << " step " << step;
      ASSERT_LT(window.size(), 2 * kWindow);
      if (step % 37 == 0) {
        // The reference's keys are findable, and nothing else of the pool is.
        std::mt19937_64 probe(seed * 31 + static_cast<uint64_t>(step));
        for (int i = 0; i < 300; ++i) {
          uint64_t f = CollidingFingerprint(probe);
          ASSERT_EQ(window.Contains(f), reference.Contains(f)) << f;
        }
      }
    }
  }
}

// The promise the event store makes: each of the last `window` accepted
// keys is remembered, however the generations turned over.
TEST(DedupWindow, RemembersAtLeastTheLastWindowKeys) {
  constexpr size_t kWindow = 1000;
  DedupWindow window(kWindow);
  std::deque<uint64_t> last;
  for (uint64_t k = 1; k <= 20 * kWindow; ++k) {
    const uint64_t f = DedupWindow::FingerprintOf(std::to_string(k));
    ASSERT_TRUE(window.Insert(f)) << k;
    last.push_back(f);
    if (last.size() > kWindow) last.pop_front();
    if (k % 97 == 0) {
      for (uint64_t r : last) ASSERT_FALSE(window.Insert(r)) << "forgot a key of the window";
    }
    ASSERT_GE(window.size(), std::min<size_t>(k, kWindow));
    ASSERT_LT(window.size(), 2 * kWindow);
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
  EXPECT_EQ(batched.size(), one_by_one.size());
  EXPECT_GE(batched.size(), 1000u);
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
