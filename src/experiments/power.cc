#include "experiments/power.h"

#include <cmath>

#include "base/status.h"
#include "experiments/stats.h"
#include "experiments/stats_distributions.h"

namespace capstan::experiments::stats {
namespace {

absl::Status CheckPositive(double x, const char* field) {
  if (!std::isfinite(x) || !(x > 0)) {
    return absl::InvalidArgumentError(std::string(field) + " must be a finite number > 0");
  }
  return absl::OkStatus();
}

absl::Status CheckPowerTarget(double power, double alpha) {
  if (!(power > alpha && power < 1)) {
    return absl::InvalidArgumentError("power must be a number in (alpha, 1)");
  }
  return absl::OkStatus();
}

// statsmodels' normal_power(d, nobs, alpha, 'two-sided') with nobs from
// NormalIndPower (ratio 1), in its order of operations. REQUIRES: valid input.
double PowerUnchecked(double effect, double n_per_arm, double variance, double alpha) {
  double effect_size = effect / std::sqrt(variance);
  double nobs = 1.0 / (1.0 / n_per_arm + 1.0 / n_per_arm);
  double critical = NormalUpperQuantile(alpha / 2).value_or(0);
  double shift = effect_size * std::sqrt(nobs);
  return NormalSf(critical - shift).value_or(0) + NormalCdf(-critical - shift).value_or(0);
}

// The x in [low, high] where increasing(x) crosses `target`, bisected until the
// interval holds no double between its ends. REQUIRES: increasing(low) <
// target <= increasing(high).
template <typename F>
double Bisect(F increasing, double low, double high, double target) {
  for (int i = 0; i < 2000; ++i) {
    double middle = low + (high - low) / 2;
    if (middle <= low || middle >= high) break;
    (increasing(middle) < target ? low : high) = middle;
  }
  return high;
}

}  // namespace

absl::StatusOr<double> TwoSidedPower(double effect, double n_per_arm, double variance,
                                     double alpha) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  RETURN_IF_ERROR(CheckPositive(n_per_arm, "n_per_arm"));
  RETURN_IF_ERROR(CheckPositive(variance, "variance"));
  if (!std::isfinite(effect)) return absl::InvalidArgumentError("effect must be a finite number");
  return PowerUnchecked(effect, n_per_arm, variance, alpha);
}

absl::StatusOr<double> MinimumDetectableEffect(double n_per_arm, double variance, double alpha,
                                               double power) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  RETURN_IF_ERROR(CheckPositive(n_per_arm, "n_per_arm"));
  RETURN_IF_ERROR(CheckPositive(variance, "variance"));
  RETURN_IF_ERROR(CheckPowerTarget(power, alpha));
  // The one-tail closed form reaches the target on its own, so it bounds the
  // answer from above.
  double z_alpha = *NormalUpperQuantile(alpha / 2);
  double z_power = *NormalUpperQuantile(1 - power);
  double upper = (z_alpha + z_power) * std::sqrt(variance * 2 / n_per_arm);
  return Bisect([&](double effect) { return PowerUnchecked(effect, n_per_arm, variance, alpha); },
                0, upper, power);
}

absl::StatusOr<double> SampleSizePerArm(double effect, double variance, double alpha,
                                        double power) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  RETURN_IF_ERROR(CheckPositive(variance, "variance"));
  if (!std::isfinite(effect) || effect == 0) {
    return absl::InvalidArgumentError("effect must be a finite number other than 0");
  }
  RETURN_IF_ERROR(CheckPowerTarget(power, alpha));
  double z_alpha = *NormalUpperQuantile(alpha / 2);
  double z_power = *NormalUpperQuantile(1 - power);
  double upper = 2 * variance * std::pow(z_alpha + z_power, 2) / (effect * effect);
  if (!std::isfinite(upper)) {
    return absl::InvalidArgumentError("effect is too small for a finite sample size");
  }
  return Bisect([&](double n) { return PowerUnchecked(effect, n, variance, alpha); }, 0, upper,
                power);
}

}  // namespace capstan::experiments::stats
