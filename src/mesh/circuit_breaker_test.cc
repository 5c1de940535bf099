#include "mesh/circuit_breaker.h"

#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;
using State = CircuitBreaker::State;

TEST(CircuitBreakerTest, ConsecutiveFailuresOpenThenAProbeCloses) {
  ManualClock clock;
  CircuitBreaker b({.consecutive_failures = 3, .open_duration = 1000ms}, &clock);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.Allow());
    b.RecordFailure();
  }
  b.RecordSuccess();  // resets the run
  for (int i = 0; i < 3; ++i) b.RecordFailure();
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_FALSE(b.Allow());
  clock.Advance(999ms);
  EXPECT_FALSE(b.Allow());
  clock.Advance(1ms);
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_TRUE(b.Allow());   // the probe
  EXPECT_FALSE(b.Allow());  // only one at a time
  b.RecordSuccess();
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_TRUE(b.Allow());
}

TEST(CircuitBreakerTest, AnAbandonedProbeFreesItsSlotWithoutAVerdict) {
  ManualClock clock;
  CircuitBreaker b({.consecutive_failures = 1, .open_duration = 100ms}, &clock);
  b.RecordFailure();
  clock.Advance(100ms);
  ASSERT_TRUE(b.Allow());
  EXPECT_FALSE(b.Allow());
  b.RecordAbandoned();
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_TRUE(b.Allow());  // the slot is free again
  b.RecordSuccess();
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerTest, AFailedProbeReopensForTwiceAsLong) {
  ManualClock clock;
  CircuitBreaker b({.consecutive_failures = 1, .open_duration = 100ms, .max_open_duration = 300ms},
                   &clock);
  b.RecordFailure();
  clock.Advance(100ms);
  ASSERT_TRUE(b.Allow());
  b.RecordFailure();
  EXPECT_EQ(b.state(), State::kOpen);
  clock.Advance(199ms);
  EXPECT_EQ(b.state(), State::kOpen);
  clock.Advance(1ms);
  ASSERT_TRUE(b.Allow());
  b.RecordFailure();
  clock.Advance(299ms);  // capped at max_open_duration
  EXPECT_EQ(b.state(), State::kOpen);
  clock.Advance(1ms);
  EXPECT_EQ(b.state(), State::kHalfOpen);
}

TEST(CircuitBreakerTest, ErrorRateTripsOnlyWithEnoughCallsInTheWindow) {
  ManualClock clock;
  CircuitBreaker b({.consecutive_failures = 1000,
                    .error_rate = 0.5,
                    .min_calls_for_rate = 10,
                    .window = 10000ms},
                   &clock);
  for (int i = 0; i < 4; ++i) {
    b.RecordSuccess();
    b.RecordFailure();
  }
  EXPECT_EQ(b.state(), State::kClosed);  // 8 calls: too few to judge
  b.RecordSuccess();
  b.RecordFailure();
  EXPECT_EQ(b.state(), State::kOpen);  // 10 calls, half failed
}

TEST(CircuitBreakerTest, OldFailuresLeaveTheWindow) {
  ManualClock clock;
  CircuitBreaker b(
      {.consecutive_failures = 1000, .error_rate = 0.5, .min_calls_for_rate = 4, .window = 2000ms},
      &clock);
  b.RecordFailure();
  b.RecordFailure();
  b.RecordFailure();
  b.RecordSuccess();
  b.RecordSuccess();
  b.RecordSuccess();
  b.RecordSuccess();  // 3 of 7
  clock.Advance(3000ms);
  b.RecordFailure();
  b.RecordSuccess();
  b.RecordSuccess();
  b.RecordSuccess();  // the old 3 failures are gone: 1 of 4
  EXPECT_EQ(b.state(), State::kClosed);
}

}  // namespace
}  // namespace capstan::mesh
