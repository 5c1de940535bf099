#include "gateway/dns/latency.h"

#include <gtest/gtest.h>

namespace capstan::gateway::dns {
namespace {

TEST(LatencyHistogram, BucketsAreMicrosecondsThenSixteenPerOctave) {
  EXPECT_EQ(LatencyHistogram::Bucket(-5), 0);
  EXPECT_EQ(LatencyHistogram::Bucket(999), 0);
  EXPECT_EQ(LatencyHistogram::Bucket(1000), 1);
  EXPECT_EQ(LatencyHistogram::Bucket(31'999), 31);
  EXPECT_EQ(LatencyHistogram::Bucket(32'000), 32);
  EXPECT_EQ(LatencyHistogram::Bucket(33'999), 32);  // 32..34 µs
  EXPECT_EQ(LatencyHistogram::Bucket(34'000), 33);
  EXPECT_EQ(LatencyHistogram::Bucket(63'999), 47);
  EXPECT_EQ(LatencyHistogram::Bucket(64'000), 48);  // 64..68 µs
  EXPECT_EQ(LatencyHistogram::Bucket(int64_t{1} << 62), LatencyHistogram::kBuckets - 1);
  // Every value is below its bucket's upper bound and at or above the
  // previous bucket's.
  for (int64_t us : {0, 1, 31, 32, 33, 63, 64, 100, 1000, 1800, 65'000, 1'000'000}) {
    int b = LatencyHistogram::Bucket(us * 1000);
    SCOPED_TRACE(us);
    EXPECT_LT(static_cast<double>(us), LatencyHistogram::UpperBoundUs(b));
    if (b > 0) {
      EXPECT_GE(static_cast<double>(us), LatencyHistogram::UpperBoundUs(b - 1));
    }
    // At most 1/16 coarse.
    EXPECT_LE(LatencyHistogram::UpperBoundUs(b), us + 1 + us / 16.0);
  }
}

TEST(LatencyHistogram, QuantilesMergeHistograms) {
  LatencyHistogram a, b;
  EXPECT_EQ(LatencyHistogram::Quantile({&a, &b}, 0.99), 0);
  // 990 fast ones (5 µs) in a, 10 slow ones (2 ms) in b: the 99th
  // percentile is still fast, the 99.9th slow.
  for (int i = 0; i < 990; ++i) a.Record(5'000);
  for (int i = 0; i < 10; ++i) b.Record(2'000'000);
  EXPECT_EQ(a.count() + b.count(), 1000u);
  EXPECT_EQ(LatencyHistogram::Quantile({&a, &b}, 0.5), 6);
  EXPECT_EQ(LatencyHistogram::Quantile({&a, &b}, 0.99), 6);
  double p999 = LatencyHistogram::Quantile({&a, &b}, 0.999);
  EXPECT_GT(p999, 2000);
  EXPECT_LE(p999, 2000 + 2000 / 16.0);
  EXPECT_EQ(LatencyHistogram::Quantile({&a}, 1.0), 6);
}

}  // namespace
}  // namespace capstan::gateway::dns
