#include "experiments/stats.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "experiments/power.h"
#include "experiments/sequential.h"
#include "experiments/stats_test_util.h"

namespace capstan::experiments::stats {
namespace {

ArmMoments Arm(double n, double mean, double variance) {
  absl::StatusOr<ArmMoments> arm = ArmFromMeanVariance(n, mean, variance, "a");
  EXPECT_TRUE(arm.ok()) << arm.status();
  return *arm;
}

// The textbook example values cross-checked in tests/stats/golden.jsonl; here
// the relations that hold whatever the numbers.
TEST(WelchTTest, SumsAndMomentsAgree) {
  // x = {1, 2, 3, 4}: mean 2.5, variance 5/3.
  absl::StatusOr<ArmMoments> from_sums = ArmFromSums(4, 10, 30, "a");
  ASSERT_TRUE(from_sums.ok());
  EXPECT_DOUBLE_EQ(from_sums->mean, 2.5);
  EXPECT_DOUBLE_EQ(from_sums->variance, 5.0 / 3.0);
  TTest a = WelchTTest(*from_sums, Arm(6, 3, 2), 0.05);
  TTest b = WelchTTest(Arm(4, 2.5, 5.0 / 3.0), Arm(6, 3, 2), 0.05);
  EXPECT_DOUBLE_EQ(*a.p_value, *b.p_value);
  EXPECT_DOUBLE_EQ(*a.df, *b.df);
}

TEST(WelchTTest, IntervalExcludesZeroExactlyWhenSignificant) {
  for (double shift : {0.0, 0.05, 0.1, 0.2, 0.3, 0.5}) {
    TTest test = WelchTTest(Arm(200, 1, 1), Arm(300, 1 + shift, 2), 0.05);
    ASSERT_TRUE(test.p_value && test.ci);
    bool excludes_zero = test.ci->lower > 0 || test.ci->upper < 0;
    EXPECT_EQ(*test.p_value < 0.05, excludes_zero) << shift;
  }
}

TEST(WelchTTest, ZeroVarianceInOneArmUsesTheOthersDf) {
  TTest test = WelchTTest(Arm(50, 2, 0), Arm(60, 2.5, 1.5), 0.05);
  ASSERT_TRUE(test.df.has_value());
  EXPECT_DOUBLE_EQ(*test.df, 59);
}

TEST(WelchTTest, ZeroVarianceInBothArmsIsUndefined) {
  TTest test = WelchTTest(Arm(50, 2, 0), Arm(60, 2.5, 0), 0.05);
  EXPECT_DOUBLE_EQ(test.estimate, 0.5);
  EXPECT_EQ(test.se, 0);
  EXPECT_FALSE(test.t || test.df || test.p_value || test.ci);
}

TEST(ArmFromSums, RejectsWhatCannotBeAnalysed) {
  EXPECT_EQ(ArmFromSums(1, 1, 1, "b").status().message(), "b.n must be a finite number >= 2");
  EXPECT_EQ(ArmFromSums(NAN, 1, 1, "b").status().message(), "b.n must be a finite number >= 2");
  EXPECT_EQ(ArmFromSums(5, INFINITY, 1, "b").status().message(), "b.sum must be a finite number");
  // Rounding can make Σx² − (Σx)²/n slightly negative: the variance is 0.
  absl::StatusOr<ArmMoments> constant = ArmFromSums(3, 0.3, 0.03, "a");
  ASSERT_TRUE(constant.ok());
  EXPECT_GE(constant->variance, 0);
}

TEST(RelativeLift, ZeroControlMeanIsUndefined) {
  RelativeLift lift = RelativeLiftTest(Arm(100, 0, 1), Arm(100, 0.2, 1), 0.05);
  EXPECT_FALSE(lift.lift || lift.variance || lift.se || lift.p_value || lift.ci || lift.ci_normal);
  EXPECT_TRUE(lift.df.has_value());
}

TEST(RelativeLift, NormalIntervalIsNarrowerThanTheT) {
  RelativeLift lift = RelativeLiftTest(Arm(20, 1, 1), Arm(20, 1.3, 1), 0.05);
  ASSERT_TRUE(lift.ci && lift.ci_normal);
  EXPECT_LT(lift.ci->lower, lift.ci_normal->lower);
  EXPECT_GT(lift.ci->upper, lift.ci_normal->upper);
}

TEST(Cuped, ConstantCovariateGivesTheUnadjustedAnalysis) {
  CupedArmSums a{10, 12, 20, 30, 90, 36};  // pre = 3 for everyone
  CupedArmSums b{12, 18, 35, 36, 108, 54};
  absl::StatusOr<Cuped> cuped = CupedTest(a, b, 0.05);
  ASSERT_TRUE(cuped.ok());
  EXPECT_EQ(cuped->theta, 0);
  TTest plain = WelchTTest(*ArmFromSums(10, 12, 20, "a"), *ArmFromSums(12, 18, 35, "b"), 0.05);
  EXPECT_DOUBLE_EQ(cuped->diff, plain.estimate);
  EXPECT_DOUBLE_EQ(*cuped->p_value, *plain.p_value);
}

TEST(RatioMetric, ZeroDenominatorIsUndefinedNotAnError) {
  RatioArmSums a{3, 3, 5, 0, 2, 1};
  RatioArmSums b{3, 6, 14, 5, 9, 11};
  absl::StatusOr<RatioMetric> ratio = RatioMetricTest(a, b, 0.05);
  ASSERT_TRUE(ratio.ok());
  EXPECT_FALSE(ratio->a.ratio.has_value());
  EXPECT_TRUE(ratio->b.ratio.has_value());
  EXPECT_FALSE(ratio->diff || ratio->p_value || ratio->relative.lift);
}

// Sums of a CUPED-ratio arm from per-unit (M, D, M0, D0).
CupedRatioArmSums CupedRatioSums(const std::vector<std::array<double, 4>>& units) {
  CupedRatioArmSums s;
  for (const auto& [m, d, m0, d0] : units) testing::AddCupedRatioUnit(&s, m, d, m0, d0);
  return s;
}

TEST(CupedRatio, AConstantPreRatioGivesTheUnadjustedRatioAnalysis) {
  // M0 = 0.5·D0 in every unit: R0 has no variance (θ = 0 despite the
  // rounding in the sums).
  CupedRatioArmSums a =
      CupedRatioSums({{1, 3, 1.5, 3}, {2, 4, 0.5, 1}, {0, 2, 2, 4}, {3, 5, 1, 2}, {1, 1, 3.5, 7}});
  CupedRatioArmSums b =
      CupedRatioSums({{2, 3, 1, 2}, {2, 2, 2.5, 5}, {1, 4, 0.5, 1}, {4, 5, 3, 6}, {0, 1, 1.5, 3}});
  absl::StatusOr<CupedRatio> cuped = CupedRatioTest(a, b, 0.05);
  ASSERT_TRUE(cuped.ok()) << cuped.status();
  EXPECT_EQ(cuped->theta, 0);
  absl::StatusOr<RatioMetric> plain = RatioMetricTest(a.post, b.post, 0.05);
  ASSERT_TRUE(plain.ok());
  EXPECT_DOUBLE_EQ(*cuped->diff, *plain->diff);
  EXPECT_DOUBLE_EQ(*cuped->diff_se, *plain->diff_se);
  EXPECT_DOUBLE_EQ(*cuped->p_value, *plain->p_value);
  EXPECT_DOUBLE_EQ(*cuped->relative.lift, *plain->relative.lift);
  EXPECT_NEAR(*cuped->relative.se, *plain->relative.se, 1e-12);
  EXPECT_EQ(*cuped->a.variance_reduction, 0);
}

TEST(CupedRatio, ACorrelatedCovariateNarrowsTheInterval) {
  // M tracks M0 unit by unit; D and D0 vary independently of them.
  std::vector<std::array<double, 4>> control, treatment;
  for (int i = 0; i < 40; ++i) {
    double propensity = 0.1 + 0.02 * (i % 10);
    double d0 = 2 + i % 3, d = 2 + (i * 7) % 4;
    control.push_back({propensity * d + 0.01 * (i % 3), d, propensity * d0, d0});
    treatment.push_back({1.2 * propensity * d + 0.01 * (i % 5), d, propensity * d0, d0});
  }
  absl::StatusOr<CupedRatio> cuped =
      CupedRatioTest(CupedRatioSums(control), CupedRatioSums(treatment), 0.05);
  ASSERT_TRUE(cuped.ok());
  EXPECT_GT(cuped->theta, 0);
  EXPECT_GT(*cuped->a.variance_reduction, 0.5);
  EXPECT_GT(*cuped->b.variance_reduction, 0.5);
  absl::StatusOr<RatioMetric> plain =
      RatioMetricTest(CupedRatioSums(control).post, CupedRatioSums(treatment).post, 0.05);
  ASSERT_TRUE(plain.ok() && plain->ci && cuped->ci);
  EXPECT_LT(cuped->ci->upper - cuped->ci->lower, 0.7 * (plain->ci->upper - plain->ci->lower));
  // Both arms had the same pre-period: the adjustment moves neither.
  EXPECT_DOUBLE_EQ(*cuped->diff, *plain->diff);
}

TEST(CupedRatio, ZeroDenominatorsAreUndefinedNotErrors) {
  CupedRatioArmSums a = CupedRatioSums({{1, 0, 1, 2}, {2, 0, 2, 3}, {0, 0, 1, 1}});
  CupedRatioArmSums b = CupedRatioSums({{1, 2, 1, 2}, {2, 3, 2, 3}, {1, 1, 0, 1}});
  absl::StatusOr<CupedRatio> cuped = CupedRatioTest(a, b, 0.05);
  ASSERT_TRUE(cuped.ok());
  EXPECT_FALSE(cuped->a.ratio || cuped->diff || cuped->p_value || cuped->relative.lift);
  EXPECT_TRUE(cuped->b.ratio.has_value());
  EXPECT_EQ(cuped->theta, 0);
  // A zero pre-period denominator: no adjustment, the ratio analysis.
  CupedRatioArmSums no_pre = CupedRatioSums({{1, 1, 0, 0}, {2, 3, 0, 0}, {0, 2, 0, 0}});
  cuped = CupedRatioTest(no_pre, b, 0.05);
  ASSERT_TRUE(cuped.ok());
  EXPECT_EQ(cuped->theta, 0);
  EXPECT_FALSE(cuped->a.pre_ratio.has_value());
  EXPECT_TRUE(cuped->pooled_pre_ratio.has_value());  // b has a pre-period
  absl::StatusOr<RatioMetric> plain = RatioMetricTest(no_pre.post, b.post, 0.05);
  ASSERT_TRUE(plain.ok() && cuped->diff.has_value());
  EXPECT_DOUBLE_EQ(*cuped->diff, *plain->diff);
  EXPECT_EQ(CupedRatioTest(CupedRatioSums({{1, 1, 1, 1}}), b, 0.05).status().message(),
            "a.n must be a finite number >= 2");
  b.numerator_pre_denominator = NAN;
  EXPECT_EQ(CupedRatioTest(a, b, 0.05).status().message(),
            "b.post_pre_sum_of_products.numerator_denominator must be a finite number");
}

TEST(Srm, FlagsBelowOneInAThousand) {
  absl::StatusOr<Srm> balanced =
      SrmTest(std::vector<double>{5020, 4980}, std::vector<double>{1, 1});
  ASSERT_TRUE(balanced.ok());
  EXPECT_FALSE(SrmAlert(*balanced));
  // A 49.9/50.1 split of 10 million users (Microsoft's one-bucket bug), with
  // an unused zero-weight arm.
  absl::StatusOr<Srm> skewed =
      SrmTest(std::vector<double>{4990000, 5010000, 0}, std::vector<double>{50, 50, 0});
  ASSERT_TRUE(skewed.ok());
  EXPECT_EQ(skewed->df, 1);
  EXPECT_TRUE(SrmAlert(*skewed)) << *skewed->p_value;
  EXPECT_EQ(skewed->expected_counts, (std::vector<double>{5000000, 5000000, 0}));
}

TEST(AdjustPValues, HolmAndBhAreMonotoneAndBounded) {
  std::vector<double> p = {0.001, 0.2, 0.04, 0.04, 0.9, 0.0, 1.0, 0.013};
  absl::StatusOr<AdjustedPValues> adjusted = AdjustPValues(p);
  ASSERT_TRUE(adjusted.ok());
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_GE(adjusted->holm[i], p[i]);
    EXPECT_GE(adjusted->bh[i], p[i]);
    EXPECT_LE(adjusted->bh[i], adjusted->holm[i]);  // BH controls less, so rejects more
    EXPECT_LE(adjusted->holm[i], 1);
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[i] <= p[j]) {
        EXPECT_LE(adjusted->holm[i], adjusted->holm[j]);
        EXPECT_LE(adjusted->bh[i], adjusted->bh[j]);
      }
    }
  }
  EXPECT_EQ(adjusted->holm[2], adjusted->holm[3]);  // ties get one answer
}

TEST(Sequential, PValueBelowAlphaExactlyWhenZeroIsOutside) {
  for (double shift : {0.0, 0.02, 0.05, 0.1, 0.2, 0.4}) {
    absl::StatusOr<SequentialComparison> test =
        SequentialWelchTest(Arm(1000, 1, 1), Arm(1000, 1 + shift, 1), 0.05, 5000);
    ASSERT_TRUE(test.ok() && test->ci && test->p_value);
    bool excludes_zero = test->ci->lower > 0 || test->ci->upper < 0;
    EXPECT_EQ(*test->p_value < 0.05, excludes_zero) << shift;
  }
}

TEST(Sequential, WiderThanTheFixedHorizonInterval) {
  ArmMoments a = Arm(2500, 1, 1), b = Arm(2500, 1.05, 1);
  TTest fixed = WelchTTest(a, b, 0.05);
  absl::StatusOr<SequentialComparison> sequential = SequentialWelchTest(a, b, 0.05, 5000);
  ASSERT_TRUE(sequential.ok() && sequential->ci && fixed.ci);
  EXPECT_GT(sequential->ci->upper - sequential->ci->lower, fixed.ci->upper - fixed.ci->lower);
  EXPECT_GT(*sequential->p_value, *fixed.p_value);
}

TEST(Power, MinimumDetectableEffectHasTheAskedPower) {
  for (double n : {10.0, 1000.0, 1e8}) {
    absl::StatusOr<double> mde = MinimumDetectableEffect(n, 2.0, 0.05, 0.8);
    ASSERT_TRUE(mde.ok());
    EXPECT_NEAR(*TwoSidedPower(*mde, n, 2.0, 0.05), 0.8, 1e-12);
    // Below the closed form (z + z_power)·σ·√(2/n), which ignores the far tail.
    EXPECT_LE(*mde, (1.959963984540054 + 0.8416212335729143) * std::sqrt(2.0 * 2 / n) * 1.0000001);
    absl::StatusOr<double> n_back = SampleSizePerArm(*mde, 2.0, 0.05, 0.8);
    ASSERT_TRUE(n_back.ok());
    EXPECT_NEAR(*n_back / n, 1, 1e-9);
  }
  // The rule of thumb: 80% power at 5% needs n ≈ 15.7·σ²/δ² per arm.
  EXPECT_NEAR(*SampleSizePerArm(0.1, 1, 0.05, 0.8), 1569.77, 0.01);
}

}  // namespace
}  // namespace capstan::experiments::stats

namespace capstan::experiments::stats {
namespace {

// GrowthBook's own expectations (gbstats tests/frequentist/test_tests.py,
// rounded there to 5 decimals): the same inputs give the same answers here.
constexpr double kGbstatsRounding = 5e-6;

TEST(GbstatsParity, TwoSidedTTest) {
  ArmMoments a = *ArmFromSums(3407, 1396.87, 52377.9767, "a");
  ArmMoments b = *ArmFromSums(3461, 2422.7, 134698.29, "b");
  // Relative (gbstats' default difference type).
  RelativeLift lift = RelativeLiftTest(a, b, 0.05);
  EXPECT_NEAR(*lift.lift, 0.70732, kGbstatsRounding);
  EXPECT_NEAR(*lift.se, 0.37879, kGbstatsRounding);
  EXPECT_NEAR(lift.ci->lower, -0.03526, kGbstatsRounding);
  EXPECT_NEAR(lift.ci->upper, 1.44989, kGbstatsRounding);
  EXPECT_NEAR(*lift.p_value, 0.06191, kGbstatsRounding);
  // Absolute.
  TTest welch = WelchTTest(a, b, 0.05);
  EXPECT_NEAR(welch.estimate, 0.29, kGbstatsRounding);
  EXPECT_NEAR(welch.se, 0.12478, kGbstatsRounding);
  EXPECT_NEAR(welch.ci->lower, 0.04538, kGbstatsRounding);
  EXPECT_NEAR(welch.ci->upper, 0.53462, kGbstatsRounding);
  EXPECT_NEAR(*welch.p_value, 0.02016, kGbstatsRounding);
}

// gbstats tests/test_gbstats.py test_srm, rounded there to 9 decimals.
TEST(GbstatsParity, CheckSrm) {
  absl::StatusOr<Srm> srm = SrmTest(std::vector<double>{1000, 1200}, std::vector<double>{0.5, 0.5});
  ASSERT_TRUE(srm.ok());
  EXPECT_NEAR(*srm->p_value, 0.000020079, 5e-10);
}

TEST(GbstatsParity, SequentialTwoSidedTTest) {
  ArmMoments a = *ArmFromSums(3000, 1396.87, 52377.9767, "a");
  ArmMoments b = *ArmFromSums(3461, 2422.7, 134698.29, "b");
  absl::StatusOr<SequentialComparison> test = SequentialWelchTest(a, b, 0.05, 1000);
  ASSERT_TRUE(test.ok());
  EXPECT_NEAR(*test->relative.lift, 0.50336, kGbstatsRounding);
  EXPECT_NEAR(*test->relative.se, 0.33341, kGbstatsRounding);
  EXPECT_NEAR(test->relative.ci->lower, -0.55844, kGbstatsRounding);
  EXPECT_NEAR(test->relative.ci->upper, 1.56516, kGbstatsRounding);
  EXPECT_EQ(*test->relative.p_value, 1);

  // Proportions: gbstats' variance is p(1 - p); default N* = 5000.
  double p_a = 1396.0 / 3000, p_b = 2422.0 / 3461;
  absl::StatusOr<SequentialComparison> proportions =
      SequentialWelchTest(Arm(3000, p_a, p_a * (1 - p_a)), Arm(3461, p_b, p_b * (1 - p_b)), 0.05,
                          kDefaultSequentialTuning);
  ASSERT_TRUE(proportions.ok());
  EXPECT_NEAR(*proportions->relative.lift, 0.50386, kGbstatsRounding);
  EXPECT_NEAR(*proportions->relative.se, 0.03386, kGbstatsRounding);
  EXPECT_NEAR(proportions->relative.ci->lower, 0.40098, kGbstatsRounding);
  EXPECT_NEAR(proportions->relative.ci->upper, 0.60675, kGbstatsRounding);
  EXPECT_NEAR(*proportions->relative.p_value, 0, kGbstatsRounding);
}

}  // namespace
}  // namespace capstan::experiments::stats
