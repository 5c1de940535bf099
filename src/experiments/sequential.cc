#include "experiments/sequential.h"

#include <algorithm>
#include <cmath>

#include "base/status.h"

namespace capstan::experiments::stats {

double SequentialRho(double alpha, double tuning) {
  double minus_two_log_alpha = -2 * std::log(alpha);
  return std::sqrt((minus_two_log_alpha + std::log(minus_two_log_alpha + 1)) / tuning);
}

SequentialInterval SequentialTest(double estimate, double se, double n_total, double alpha,
                                  double tuning) {
  SequentialInterval out;
  if (!(se > 0) || !std::isfinite(se) || !(n_total > 0) || !std::isfinite(estimate)) return out;
  double rho = SequentialRho(alpha, tuning);
  double rho_squared = rho * rho;
  double n_rho_squared_plus_one = n_total * rho_squared + 1;
  double s_squared = se * se * n_total;
  double n_rho = n_total * rho;
  double halfwidth =
      std::sqrt(s_squared) *
      std::sqrt(2 * n_rho_squared_plus_one * std::log(std::sqrt(n_rho_squared_plus_one) / alpha) /
                (n_rho * n_rho));
  if (std::isfinite(halfwidth)) out.ci = Interval{estimate - halfwidth, estimate + halfwidth};
  // In logs: E itself overflows for a large effect, where p is 0.
  double statistic = estimate * estimate * n_total / (se * se);
  double log_e_value = rho_squared * statistic / (2 * n_rho_squared_plus_one) -
                       0.5 * std::log(n_rho_squared_plus_one);
  if (!std::isnan(log_e_value)) out.p_value = std::min(1.0, std::exp(-log_e_value));
  return out;
}

absl::StatusOr<SequentialComparison> SequentialWelchTest(const ArmMoments& a, const ArmMoments& b,
                                                         double alpha, double tuning) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  if (!std::isfinite(tuning) || !(tuning > 0)) {
    return absl::InvalidArgumentError("sequential_tuning_parameter must be a finite number > 0");
  }
  SequentialComparison out;
  out.n = a.n + b.n;
  out.rho = SequentialRho(alpha, tuning);
  double variance_of_mean_a = a.variance / a.n;
  double variance_of_mean_b = b.variance / b.n;
  out.diff = b.mean - a.mean;
  out.se = std::sqrt(variance_of_mean_a + variance_of_mean_b);
  SequentialInterval absolute = SequentialTest(out.diff, out.se, out.n, alpha, tuning);
  out.ci = absolute.ci;
  out.p_value = absolute.p_value;
  RelativeLift lift = RelativeLiftTest(a, b, alpha);
  if (lift.lift.has_value() && lift.se.has_value()) {
    out.relative.lift = lift.lift;
    out.relative.se = lift.se;
    SequentialInterval relative = SequentialTest(*lift.lift, *lift.se, out.n, alpha, tuning);
    out.relative.ci = relative.ci;
    out.relative.p_value = relative.p_value;
  }
  return out;
}

}  // namespace capstan::experiments::stats
