#include "mesh/concurrency_limiter.h"

#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

// A server that can run `capacity` calls at once in `base` each; more queue,
// so latency grows with concurrency. Each round offers `offered` calls, lets
// the limiter admit what it will, and finishes them one window later.
struct SimulatedServer {
  int capacity;
  std::chrono::nanoseconds base;
  int Round(AdaptiveConcurrencyLimiter& limiter, ManualClock& clock, int offered) {
    int admitted = 0;
    while (admitted < offered && limiter.TryAcquire()) ++admitted;
    auto latency = base * std::max(1.0, static_cast<double>(admitted) / capacity);
    clock.Advance(100ms);
    for (int i = 0; i < admitted; ++i) {
      limiter.Release(std::chrono::duration_cast<std::chrono::nanoseconds>(latency));
    }
    return admitted;
  }
};

TEST(AdaptiveLimiterTest, SettlesNearCapacityUnderOverloadInsteadOfAdmittingEverything) {
  ManualClock clock;
  AdaptiveConcurrencyLimiter limiter({.initial_limit = 50}, &clock);
  SimulatedServer server{.capacity = 100, .base = 1ms};
  int admitted = 0;
  for (int round = 0; round < 100; ++round) admitted = server.Round(limiter, clock, 1000);
  EXPECT_GE(limiter.limit(), 100) << "grew from 50 while latency stayed flat";
  EXPECT_LE(limiter.limit(), 400) << "stopped where queueing doubles latency (tolerance 2), "
                                     "far below the 1000 offered";
  EXPECT_EQ(admitted, limiter.limit());
}

TEST(AdaptiveLimiterTest, CutsTheLimitWhenLatencyRisesAtTheSameConcurrency) {
  ManualClock clock;
  AdaptiveConcurrencyLimiter limiter({.initial_limit = 50}, &clock);
  SimulatedServer server{.capacity = 10'000, .base = 1ms};
  for (int round = 0; round < 60; ++round) server.Round(limiter, clock, 200);
  int before = limiter.limit();
  ASSERT_GE(before, 150);
  // The backend gets 5x slower for everyone: the limiter backs off.
  server.base = 5ms;
  for (int round = 0; round < 10; ++round) server.Round(limiter, clock, 200);
  EXPECT_LT(limiter.limit(), before * 3 / 4);
  EXPECT_GE(limiter.limit(), 8) << "never below min_limit";
}

TEST(AdaptiveLimiterTest, LightLoadDoesNotGrowTheLimit) {
  ManualClock clock;
  AdaptiveConcurrencyLimiter limiter({.initial_limit = 50}, &clock);
  SimulatedServer server{.capacity = 1000, .base = 1ms};
  for (int round = 0; round < 100; ++round) server.Round(limiter, clock, 20);
  EXPECT_LE(limiter.limit(), 50);
}

TEST(AdaptiveLimiterTest, RefusesOverTheLimitAndAdmitsAgainAfterARelease) {
  ManualClock clock;
  AdaptiveConcurrencyLimiter limiter({.initial_limit = 8, .min_limit = 8}, &clock);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(limiter.TryAcquire());
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.in_flight(), 8);
  limiter.Release(1ms);
  EXPECT_TRUE(limiter.TryAcquire());
}

}  // namespace
}  // namespace capstan::mesh
