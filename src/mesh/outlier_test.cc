#include "mesh/outlier.h"

#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

struct Fleet {
  explicit Fleet(int n) : stats(n) {
    for (auto& s : stats) pointers.push_back(&s);
  }
  // `failures` of `calls` fail at endpoint i.
  void Load(size_t i, int calls, int failures) {
    for (int k = 0; k < calls; ++k) stats[i].Record(k >= failures);
  }
  std::vector<OutlierStats> stats;
  std::vector<OutlierStats*> pointers;
};

TEST(OutlierDetectorTest, EjectsTheEndpointFarBelowItsPeersAndLetsItBack) {
  ManualClock clock;
  OutlierDetector d({.min_hosts = 5, .min_requests = 100, .base_ejection_time = 30000ms}, &clock);
  Fleet f(10);
  for (size_t i = 0; i < 10; ++i) f.Load(i, 200, i == 3 ? 40 : 0);  // 80% vs 100%
  EXPECT_EQ(d.Evaluate(f.pointers), 1);
  EXPECT_TRUE(d.ejected(f.stats[3]));
  for (size_t i = 0; i < 10; ++i) {
    if (i == 3) continue;
    EXPECT_FALSE(d.ejected(f.stats[i])) << i;
  }
  EXPECT_EQ(f.stats[0].successes, 0u);  // counters start over each interval
  clock.Advance(29999ms);
  EXPECT_TRUE(d.ejected(f.stats[3]));
  clock.Advance(1ms);
  EXPECT_FALSE(d.ejected(f.stats[3]));
}

TEST(OutlierDetectorTest, RepeatOffendersStayOutLongerAndAreForgivenOverTime) {
  ManualClock clock;
  OutlierDetector d({.min_hosts = 5,
                     .min_requests = 10,
                     .base_ejection_time = 1000ms,
                     .max_ejection_time = 2500ms},
                    &clock);
  Fleet f(10);
  auto round = [&](bool bad) {
    for (size_t i = 0; i < 10; ++i) f.Load(i, 100, (bad && i == 0) ? 50 : 0);
    return d.Evaluate(f.pointers);
  };
  ASSERT_EQ(round(true), 1);
  clock.Advance(1000ms);
  ASSERT_EQ(round(true), 1);  // second time: 2 s
  clock.Advance(1999ms);
  EXPECT_TRUE(d.ejected(f.stats[0]));
  clock.Advance(1ms);
  ASSERT_EQ(round(true), 1);  // third time: 3 s, capped at 2.5 s
  clock.Advance(2499ms);
  EXPECT_TRUE(d.ejected(f.stats[0]));
  clock.Advance(1ms);
  EXPECT_EQ(f.stats[0].times_ejected, 3);
  EXPECT_EQ(round(false), 0);
  EXPECT_EQ(f.stats[0].times_ejected, 2);  // a clean interval lowers the count
}

TEST(OutlierDetectorTest, NeedsEnoughHostsAndRequestsAndCapsTheEjectedShare) {
  ManualClock clock;
  OutlierDetector d({.min_hosts = 5, .min_requests = 100, .max_ejection_percent = 10}, &clock);
  Fleet small(4);
  for (size_t i = 0; i < 4; ++i) small.Load(i, 200, i == 0 ? 150 : 0);
  EXPECT_EQ(d.Evaluate(small.pointers), 0) << "4 hosts: too few to judge one against the rest";

  Fleet quiet(10);
  for (size_t i = 0; i < 10; ++i) quiet.Load(i, 99, i == 0 ? 99 : 0);
  EXPECT_EQ(d.Evaluate(quiet.pointers), 0) << "below min_requests";

  Fleet two_bad(10);
  for (size_t i = 0; i < 10; ++i) two_bad.Load(i, 200, i < 2 ? 100 : 0);
  EXPECT_EQ(d.Evaluate(two_bad.pointers), 1) << "10% of 10 hosts: one at a time";
  EXPECT_TRUE(d.ejected(two_bad.stats[0]) || d.ejected(two_bad.stats[1]));
}

TEST(OutlierDetectorTest, MaybeEvaluateWaitsForTheInterval) {
  ManualClock clock;
  OutlierDetector d({.interval = 10000ms, .min_hosts = 5, .min_requests = 1}, &clock);
  Fleet f(5);
  for (size_t i = 0; i < 5; ++i) f.Load(i, 100, i == 0 ? 100 : 0);
  EXPECT_EQ(d.MaybeEvaluate(f.pointers), 0);
  EXPECT_EQ(f.stats[0].failures, 100u) << "nothing evaluated or reset before the interval";
  clock.Advance(10000ms);
  EXPECT_EQ(d.MaybeEvaluate(f.pointers), 1);
}

}  // namespace
}  // namespace capstan::mesh
