// Simulations that hold the engine to its promises about error rates: A/A
// Welch tests keep the false-positive rate at alpha; looking after every batch
// inflates a fixed-horizon test's false-positive rate far past alpha, and the
// sequential test keeps it below. Seeded and deterministic: a normal source of
// our own over std::mt19937_64 (whose output the standard fixes), because
// std::normal_distribution differs between standard libraries.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "experiments/sequential.h"
#include "experiments/stats.h"

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

}  // namespace
}  // namespace capstan::experiments::stats
