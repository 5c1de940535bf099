// The distribution functions the statistics engine needs, on Boost.Math with a
// policy that never throws: an argument outside a distribution's domain gives
// std::nullopt. Internal to src/experiments (stats.cc, sequential.cc, power.cc).
//
// Thread-safety: pure functions.
#ifndef CAPSTAN_EXPERIMENTS_STATS_DISTRIBUTIONS_H_
#define CAPSTAN_EXPERIMENTS_STATS_DISTRIBUTIONS_H_

#include <optional>

namespace capstan::experiments::stats {

// 2·P(T_df > |t|), from the upper tail (no 1 − cdf cancellation).
std::optional<double> StudentTTwoSidedP(double t, double df);
// The t_df quantile with upper tail `upper_tail`: t such that P(T_df > t) = upper_tail.
std::optional<double> StudentTUpperQuantile(double upper_tail, double df);
// The standard normal quantile with upper tail `upper_tail`.
std::optional<double> NormalUpperQuantile(double upper_tail);
// Φ(x) and 1 − Φ(x), each computed directly.
std::optional<double> NormalCdf(double x);
std::optional<double> NormalSf(double x);
// P(χ²_df > x).
std::optional<double> ChiSquaredSf(double x, double df);

}  // namespace capstan::experiments::stats

#endif  // CAPSTAN_EXPERIMENTS_STATS_DISTRIBUTIONS_H_
