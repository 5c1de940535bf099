#include "mesh/retry_budget.h"

#include "gtest/gtest.h"

namespace capstan::mesh {
namespace {

using namespace std::chrono_literals;

TEST(RetryBudgetTest, RetriesAreCappedAtTheRatioOfCalls) {
  ManualClock clock;
  RetryBudget budget({.ratio = 0.1, .min_retries_per_second = 0, .window = 10s}, &clock);
  for (int i = 0; i < 1000; ++i) budget.RecordCall();
  int allowed = 0;
  while (budget.TryRetry()) ++allowed;
  EXPECT_EQ(allowed, 100);
  EXPECT_EQ(budget.retries_in_window(), 100);
}

TEST(RetryBudgetTest, AQuietClientStillGetsTheFloor) {
  ManualClock clock;
  RetryBudget budget({.ratio = 0.1, .min_retries_per_second = 2, .window = 5s}, &clock);
  int allowed = 0;
  while (budget.TryRetry()) ++allowed;
  EXPECT_EQ(allowed, 10);
}

TEST(RetryBudgetTest, TheWindowSlides) {
  ManualClock clock;
  RetryBudget budget({.ratio = 0.5, .min_retries_per_second = 0, .window = 10s}, &clock);
  for (int i = 0; i < 10; ++i) budget.RecordCall();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(budget.TryRetry());
  EXPECT_FALSE(budget.TryRetry());
  clock.Advance(11s);
  EXPECT_EQ(budget.calls_in_window(), 0);
  EXPECT_FALSE(budget.TryRetry());  // no calls, no floor
  for (int i = 0; i < 4; ++i) budget.RecordCall();
  EXPECT_TRUE(budget.TryRetry());
  EXPECT_TRUE(budget.TryRetry());
  EXPECT_FALSE(budget.TryRetry());
}

}  // namespace
}  // namespace capstan::mesh
