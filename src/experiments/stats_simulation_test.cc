// Simulations that hold the engine to its promises about error rates: A/A
// Welch tests keep the false-positive rate at alpha; looking after every batch
// inflates a fixed-horizon test's false-positive rate far past alpha, and the
// sequential test keeps it below; CUPED for ratio metrics covers at the
// nominal rate and narrows the interval. Seeded and deterministic: a normal source of
// our own over std::mt19937_64 (whose output the standard fixes), because
// std::normal_distribution differs between standard libraries.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "experiments/sequential.h"
#include "experiments/stats.h"
#include "experiments/stats_test_util.h"

namespace capstan::experiments::stats {
namespace {

constexpr double kAlpha = 0.05;

// Standard normal draws by the Box-Muller transform.
class NormalSource {
 public:
  explicit NormalSource(uint64_t seed) : engine_(seed) {}

  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    // Uniform in (0, 1]: log(0) never happens.
    double u1 = (static_cast<double>(engine_() >> 11) + 1) * 0x1.0p-53;
    double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    double radius = std::sqrt(-2 * std::log(u1));
    double angle = 2 * M_PI * u2;
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

// Running sufficient statistics of one arm.
struct Sums {
  double n = 0, sum = 0, sum_squares = 0;
  void Add(double x) {
    n += 1;
    sum += x;
    sum_squares += x * x;
  }
  ArmMoments Moments() const { return *ArmFromSums(n, sum, sum_squares, "arm"); }
};

TEST(Simulation, AaWelchFalsePositiveRateIsAlpha) {
  NormalSource normal(17);
  constexpr int kExperiments = 10000;
  int significant = 0;
  for (int e = 0; e < kExperiments; ++e) {
    // Unequal sizes and variances: Welch's case, where a pooled test errs.
    Sums a, b;
    for (int i = 0; i < 40; ++i) a.Add(5 + 1.0 * normal.Next());
    for (int i = 0; i < 80; ++i) b.Add(5 + 3.0 * normal.Next());
    TTest test = WelchTTest(a.Moments(), b.Moments(), kAlpha);
    ASSERT_TRUE(test.p_value.has_value());
    if (*test.p_value < kAlpha) ++significant;
  }
  double rate = static_cast<double>(significant) / kExperiments;
  EXPECT_NEAR(rate, kAlpha, 0.01) << significant << " of " << kExperiments;
  RecordProperty("aa_fpr", std::to_string(rate));
}

struct PeekingRates {
  double naive;       // significant at any look, fixed-horizon Welch
  double sequential;  // significant at any look, always-valid p-value
};

// A/A experiments looked at after every batch; an experiment counts as a false
// positive if any look is significant (the experimenter stops there).
PeekingRates PeekAtAaExperiments(uint64_t seed, int experiments, int looks, int batch) {
  NormalSource normal(seed);
  int naive = 0, sequential = 0;
  for (int e = 0; e < experiments; ++e) {
    Sums a, b;
    bool naive_hit = false, sequential_hit = false;
    for (int look = 0; look < looks; ++look) {
      for (int i = 0; i < batch; ++i) {
        a.Add(normal.Next());
        b.Add(normal.Next());
      }
      ArmMoments ma = a.Moments(), mb = b.Moments();
      TTest fixed = WelchTTest(ma, mb, kAlpha);
      naive_hit |= fixed.p_value.has_value() && *fixed.p_value < kAlpha;
      absl::StatusOr<SequentialComparison> always_valid =
          SequentialWelchTest(ma, mb, kAlpha, kDefaultSequentialTuning);
      sequential_hit |=
          always_valid.ok() && always_valid->p_value.has_value() && *always_valid->p_value < kAlpha;
    }
    naive += naive_hit;
    sequential += sequential_hit;
  }
  return {static_cast<double>(naive) / experiments, static_cast<double>(sequential) / experiments};
}

TEST(Simulation, PeekingBreaksTheFixedHorizonTestButNotTheSequentialOne) {
  // 20 looks, 100 units per arm per look: 4,000 units at the end, near N*.
  PeekingRates rates = PeekAtAaExperiments(29, 2000, 20, 100);
  // The naive test "fails": with 20 looks its error rate is several times alpha.
  EXPECT_GT(rates.naive, 2 * kAlpha) << rates.naive;
  EXPECT_LE(rates.sequential, kAlpha) << rates.sequential;
  RecordProperty("naive_fpr", std::to_string(rates.naive));
  RecordProperty("sequential_fpr", std::to_string(rates.sequential));
}

TEST(Simulation, SequentialIntervalsCoverTheTrueEffectAtEveryLook) {
  NormalSource normal(31);
  constexpr double kEffect = 0.1;
  constexpr int kExperiments = 1000;
  int missed = 0;
  for (int e = 0; e < kExperiments; ++e) {
    Sums a, b;
    bool miss = false;
    for (int look = 0; look < 20; ++look) {
      for (int i = 0; i < 100; ++i) {
        a.Add(1 + normal.Next());
        b.Add(1 + kEffect + 2 * normal.Next());
      }
      absl::StatusOr<SequentialComparison> test =
          SequentialWelchTest(a.Moments(), b.Moments(), kAlpha, kDefaultSequentialTuning);
      ASSERT_TRUE(test.ok() && test->ci.has_value());
      miss |= kEffect < test->ci->lower || kEffect > test->ci->upper;
    }
    missed += miss;
  }
  EXPECT_LE(static_cast<double>(missed) / kExperiments, kAlpha) << missed;
}

// CUPED for ratio metrics: clicks over sessions per unit, with a click
// propensity that persists from the pre-period, treatment lifting clicks by
// kLift. The regression-adjusted intervals (absolute and relative) cover the
// true effect at the nominal rate, and are narrower than the unadjusted
// ratio's because the covariate correlates.
TEST(Simulation, CupedRatioIntervalsCoverAndReduceVariance) {
  NormalSource normal(43);
  constexpr double kBaseRate = 0.3, kLift = 0.05;
  constexpr int kExperiments = 4000, kUnitsPerArm = 200;
  int covered = 0, relative_covered = 0;
  double reduction_sum = 0, adjusted_width_sum = 0, unadjusted_width_sum = 0;
  for (int e = 0; e < kExperiments; ++e) {
    CupedRatioArmSums arms[2];
    for (int arm = 0; arm < 2; ++arm) {
      CupedRatioArmSums& s = arms[arm];
      for (int i = 0; i < kUnitsPerArm; ++i) {
        const double propensity = kBaseRate + 0.1 * normal.Next();
        const double d0 = 3 + 0.5 * normal.Next();
        const double m0 = propensity * d0 + 0.2 * normal.Next();
        const double d = 3 + 0.5 * normal.Next();
        const double m = propensity * (arm == 1 ? 1 + kLift : 1) * d + 0.2 * normal.Next();
        testing::AddCupedRatioUnit(&s, m, d, m0, d0);
      }
    }
    absl::StatusOr<CupedRatio> test = CupedRatioTest(arms[0], arms[1], kAlpha);
    ASSERT_TRUE(test.ok() && test->ci.has_value() && test->relative.ci.has_value());
    // E[M]/E[D] = E[propensity]·(1 + lift): propensity and sessions are independent.
    const double true_diff = kBaseRate * kLift;
    covered += test->ci->lower <= true_diff && true_diff <= test->ci->upper;
    relative_covered += test->relative.ci->lower <= kLift && kLift <= test->relative.ci->upper;
    reduction_sum += *test->a.variance_reduction + *test->b.variance_reduction;
    absl::StatusOr<RatioMetric> plain = RatioMetricTest(arms[0].post, arms[1].post, kAlpha);
    ASSERT_TRUE(plain.ok() && plain->ci.has_value());
    adjusted_width_sum += test->ci->upper - test->ci->lower;
    unadjusted_width_sum += plain->ci->upper - plain->ci->lower;
  }
  const double coverage = static_cast<double>(covered) / kExperiments;
  const double relative_coverage = static_cast<double>(relative_covered) / kExperiments;
  // The rate's standard error at 4,000 experiments is 0.0034.
  EXPECT_NEAR(coverage, 1 - kAlpha, 0.012) << covered;
  EXPECT_NEAR(relative_coverage, 1 - kAlpha, 0.012) << relative_covered;
  const double mean_reduction = reduction_sum / (2 * kExperiments);
  EXPECT_GT(mean_reduction, 0.3);
  EXPECT_LT(adjusted_width_sum, 0.85 * unadjusted_width_sum);
  RecordProperty("cuped_ratio_coverage", std::to_string(coverage));
  RecordProperty("cuped_ratio_variance_reduction", std::to_string(mean_reduction));
}

}  // namespace
}  // namespace capstan::experiments::stats
