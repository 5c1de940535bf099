// Power, minimum detectable effect and sample size of a two-sided comparison
// of two means with equal arms, for planning an experiment before it runs.
//
// The model is statsmodels' NormalIndPower with ratio 1 (the z-test for two
// independent samples): with n units per arm, per-unit variance σ² in each arm
// and effect δ (b − a in the metric's units), d = δ/σ, m = 1/(1/n + 1/n),
// z = Φ⁻¹(1 − α/2),
//
//   power(δ) = 1 − Φ(z − d·√m) + Φ(−z − d·√m)
//
// (both tails, as statsmodels counts them). The minimum detectable effect and
// the sample size are the δ and n where power equals the target, found by
// bisection to the last bit (power is increasing in both), so they agree with
// statsmodels' power function to rounding rather than to a solver's tolerance.
// The usual closed form (z + z_power)·σ·√(2/n) ignores the far tail and is an
// upper bound of the answer.
//
// Thread-safety: pure functions.
//
// Example:
//   absl::StatusOr<double> mde = MinimumDetectableEffect(10000, 0.25, 0.05, 0.8);
#ifndef CAPSTAN_EXPERIMENTS_POWER_H_
#define CAPSTAN_EXPERIMENTS_POWER_H_

#include "absl/status/statusor.h"

namespace capstan::experiments::stats {

inline constexpr double kDefaultPower = 0.8;

// The probability of a significant two-sided result at level alpha for a true
// effect `effect`. InvalidArgument for n_per_arm or variance not > 0, or alpha
// outside (0, 1).
absl::StatusOr<double> TwoSidedPower(double effect, double n_per_arm, double variance,
                                     double alpha);

// The smallest effect > 0 detected with probability `power`. REQUIRES nothing:
// power must lie in (alpha, 1).
absl::StatusOr<double> MinimumDetectableEffect(double n_per_arm, double variance, double alpha,
                                               double power);

// The units per arm (a real number; round it up to plan) that detect `effect`
// with probability `power`.
absl::StatusOr<double> SampleSizePerArm(double effect, double variance, double alpha, double power);

}  // namespace capstan::experiments::stats

#endif  // CAPSTAN_EXPERIMENTS_POWER_H_
