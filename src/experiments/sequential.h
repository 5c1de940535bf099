// Sequential testing: always-valid confidence sequences and p-values, as
// GrowthBook's gbstats computes them (frequentist/tests.py,
// SequentialTwoSidedTTest), so that an experimenter may look at the results
// after every batch of data and still keep the false-positive rate at alpha.
//
// The construction is the asymptotic confidence sequence of Waudby-Smith,
// Arnold, Wu, Wang, Ramdas, "Time-uniform central limit theory and asymptotic
// confidence sequences" (arXiv:2103.06476v7): a normal mixture over the effect
// with mixing variance ρ², tuned so that the sequence is narrowest at the total
// sample size N* (GrowthBook's "tuning parameter", default 5000):
//
//   ρ          = sqrt((−2·ln α + ln(−2·ln α + 1)) / N*)                  (their eq. for ρ at N*)
//   halfwidth  = sqrt(s²) · sqrt(2·(nρ² + 1)·ln(sqrt(nρ² + 1)/α) / (nρ)²) with s² = n·se²
//   p          = min(1, 1/E), E = exp(ρ²·S/(2(nρ² + 1))) / sqrt(nρ² + 1), S = n·Δ²/se²  (eq. 155)
//
// where n is the total number of units in both arms, Δ the estimate and se its
// standard error (from the Welch comparison). p < α exactly when 0 is outside
// the interval. The interval is wider than the fixed-horizon one: that is the
// price of peeking.
//
// Thread-safety: pure functions.
//
// Example:
//   absl::StatusOr<SequentialComparison> r = SequentialWelchTest(a, b, 0.05, 5000);
//   if (r.ok() && r->p_value && *r->p_value < 0.05) { /* stop: significant */ }
#ifndef CAPSTAN_EXPERIMENTS_SEQUENTIAL_H_
#define CAPSTAN_EXPERIMENTS_SEQUENTIAL_H_

#include <optional>

#include "absl/status/statusor.h"
#include "experiments/stats.h"

namespace capstan::experiments::stats {

// GrowthBook's default N* (docs/statistics/sequential.mdx).
inline constexpr double kDefaultSequentialTuning = 5000;

// ρ for a two-sided sequence at level 1 − alpha tuned for N* = `tuning`.
// REQUIRES: 0 < alpha < 1, tuning > 0.
double SequentialRho(double alpha, double tuning);

struct SequentialInterval {
  std::optional<Interval> ci;
  std::optional<double> p_value;
};
// The always-valid interval and p-value of `estimate` (standard error `se`)
// after `n_total` units. Both are nullopt when se or n_total is not positive.
// REQUIRES: 0 < alpha < 1, tuning > 0.
SequentialInterval SequentialTest(double estimate, double se, double n_total, double alpha,
                                  double tuning);

// Welch's comparison b − a (and its relative lift) with sequential intervals.
struct SequentialComparison {
  double diff = 0;
  double se = 0;
  double n = 0;  // units in both arms
  double rho = 0;
  std::optional<Interval> ci;
  std::optional<double> p_value;
  RelativeTest relative;
};
// InvalidArgument for an alpha outside (0, 1) or a tuning that is not a finite
// positive number.
absl::StatusOr<SequentialComparison> SequentialWelchTest(const ArmMoments& a, const ArmMoments& b,
                                                         double alpha, double tuning);

}  // namespace capstan::experiments::stats

#endif  // CAPSTAN_EXPERIMENTS_SEQUENTIAL_H_
