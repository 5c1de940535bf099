// LatencyHistogram: where a UDP query's time inside the server goes, for
// the `udp_latency_metrics` option (docs/gateway.md, "DNS"): one writer
// (the socket's loop thread) records nanoseconds, any thread reads
// quantiles. Log-linear buckets: 1 µs wide below 32 µs, then 16 per power
// of two (a quantile is reported as its bucket's upper bound, at most 1/16
// above the true value), up to about 67 s; longer counts as the last.
//
//   LatencyHistogram h;
//   h.Record(read_at_ns - arrival_ns);          // loop thread
//   double p99_us = LatencyHistogram::Quantile({&h}, 0.99);   // any thread
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace capstan::gateway::dns {

class LatencyHistogram {
 public:
  static constexpr int kLinear = 32;  // 1 µs buckets below this
  static constexpr int kSubBuckets = 16;
  static constexpr int kOctaves = 22;  // 32 µs .. 2^27 µs
  static constexpr int kBuckets = kLinear + kOctaves * kSubBuckets;

  // One writer at a time (a load and a store, no locked instruction on
  // the query path).
  void Record(int64_t ns) {
    std::atomic<uint64_t>& b = buckets_[Bucket(ns)];
    b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  uint64_t count() const {
    uint64_t n = 0;
    for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
    return n;
  }
  // The q-quantile (0 < q <= 1) in microseconds over several histograms
  // (one per socket); 0 when nothing was recorded.
  static double Quantile(const std::vector<const LatencyHistogram*>& histograms, double q);

  static int Bucket(int64_t ns) {
    uint64_t us = ns <= 0 ? 0 : static_cast<uint64_t>(ns) / 1000;
    if (us < kLinear) return static_cast<int>(us);
    int octave = std::bit_width(us) - 1;  // >= 5
    int sub = static_cast<int>((us >> (octave - 4)) & (kSubBuckets - 1));
    int index = kLinear + (octave - 5) * kSubBuckets + sub;
    return index < kBuckets ? index : kBuckets - 1;
  }
  // The smallest microsecond count above every value of bucket i.
  static double UpperBoundUs(int i) {
    if (i < kLinear) return i + 1;
    int octave = (i - kLinear) / kSubBuckets + 5;
    int sub = (i - kLinear) % kSubBuckets;
    return static_cast<double>(static_cast<uint64_t>(kSubBuckets + sub + 1) << (octave - 4));
  }

 private:
  std::atomic<uint64_t> buckets_[kBuckets] = {};
};

inline double LatencyHistogram::Quantile(const std::vector<const LatencyHistogram*>& histograms,
                                         double q) {
  uint64_t total = 0;
  for (const LatencyHistogram* h : histograms) total += h->count();
  if (total == 0) return 0;
  // The rank of the q-quantile, 1-based: the smallest value with at least
  // q of the observations at or below it.
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total));
  if (rank < 1) rank = 1;
  if (static_cast<double>(rank) < q * static_cast<double>(total)) ++rank;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    for (const LatencyHistogram* h : histograms) {
      seen += h->buckets_[i].load(std::memory_order_relaxed);
    }
    if (seen >= rank) return UpperBoundUs(i);
  }
  return UpperBoundUs(kBuckets - 1);
}

}  // namespace capstan::gateway::dns
