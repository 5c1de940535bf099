// The statistics engine of an A/B comparison, computed from sufficient
// statistics (n, sums, sums of squares and of products), so that a stream of
// events or a warehouse query can feed it without keeping any unit's data.
//
// Arm `a` is control and `b` treatment; every difference is b - a; variances
// are per-unit sample variances (n - 1 denominator); `alpha` is two-sided
// (intervals have level 1 - alpha); degrees of freedom are Welch-Satterthwaite.
// The conventions are those of the shared experiments-eval-protocol.md,
// section 6, which follow GrowthBook's gbstats (packages/stats/gbstats:
// frequentist/tests.py, utils.py, models/statistics.py); the formulas and their
// sources are listed in docs/experiments-statistics.md.
//
// A result that is undefined (a zero standard error, a zero control mean under
// a relative lift, a zero denominator mean) is std::nullopt, never NaN. Input
// that cannot be analysed (n < 2, a negative variance, a non-finite number, an
// alpha outside (0, 1)) is an InvalidArgument Status naming the field; no
// exception leaves this module (Boost.Math is used with a policy that returns
// NaN instead of throwing, and NaN becomes nullopt).
//
// Thread-safety: every function is pure and reentrant.
//
// Example:
//   absl::StatusOr<ArmMoments> a = ArmFromMeanVariance(1000, 0.10, 0.09, "a");
//   absl::StatusOr<ArmMoments> b = ArmFromMeanVariance(1000, 0.12, 0.1056, "b");
//   TTest welch = WelchTTest(*a, *b, 0.05);  // welch.p_value, welch.ci, ...
#ifndef CAPSTAN_EXPERIMENTS_STATS_H_
#define CAPSTAN_EXPERIMENTS_STATS_H_

#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace capstan::experiments::stats {

inline constexpr double kDefaultAlpha = 0.05;

// GrowthBook warns of a sample ratio mismatch below this p-value
// (docs/app/experiment-results.mdx).
inline constexpr double kSrmAlertPValue = 0.001;

// A two-sided interval [lower, upper].
struct Interval {
  double lower = 0;
  double upper = 0;
};

// One arm's per-unit summary: n units, their mean and their sample variance
// (n - 1 denominator).
struct ArmMoments {
  double n = 0;
  double mean = 0;
  double variance = 0;
};

// An arm from its mean and variance, or from its sums. `field` names the arm in
// errors ("a" gives "a.n must be ..."). REQUIRES nothing: the input is checked
// (n finite and >= 2, variance finite and >= 0, sums finite).
absl::StatusOr<ArmMoments> ArmFromMeanVariance(double n, double mean, double variance,
                                               std::string_view field);
absl::StatusOr<ArmMoments> ArmFromSums(double n, double sum, double sum_squares,
                                       std::string_view field);

// (Σx² − (Σx)²/n)/(n − 1), clamped at 0 (rounding can make it slightly negative).
double SampleVarianceFromSums(double n, double sum, double sum_squares);
// (Σxy − ΣxΣy/n)/(n − 1).
double SampleCovarianceFromSums(double n, double sum_x, double sum_y, double sum_xy);

// InvalidArgument unless 0 < alpha < 1.
absl::Status ValidateAlpha(double alpha);

// Welch-Satterthwaite degrees of freedom from each arm's variance of the mean
// (s²/n) and n: (v_a + v_b)² / (v_a²/(n_a − 1) + v_b²/(n_b − 1)). nullopt when
// both variances are 0.
std::optional<double> WelchDegreesOfFreedom(double variance_of_mean_a, double n_a,
                                            double variance_of_mean_b, double n_b);

// A two-sided t-based test of `estimate` against 0: t = estimate/se,
// p = 2·P(T_df > |t|), ci = estimate ± t_{1−alpha/2, df}·se. The parts that
// need se > 0 and a finite df > 0 are nullopt otherwise.
struct TTest {
  double estimate = 0;
  double se = 0;
  std::optional<double> t;
  std::optional<double> df;
  std::optional<double> p_value;
  std::optional<Interval> ci;
};
TTest TwoSidedTTest(double estimate, double se, std::optional<double> df, double alpha);

// Welch's t-test of b − a.
TTest WelchTTest(const ArmMoments& a, const ArmMoments& b, double alpha);

// Relative lift (b − a)/|a| with the delta method's variance
// s_b²/(n_b·ā²) + b̄²·s_a²/(n_a·ā⁴), a t-based test with the absolute
// comparison's Welch df, and a normal-based interval. Everything but df is
// nullopt when ā = 0; the test parts are nullopt when the variance is 0.
struct RelativeLift {
  std::optional<double> lift;
  std::optional<double> variance;
  std::optional<double> se;
  std::optional<double> df;
  std::optional<double> p_value;
  std::optional<Interval> ci;
  std::optional<Interval> ci_normal;
};
RelativeLift RelativeLiftTest(const ArmMoments& a, const ArmMoments& b, double alpha);

// The relative part of a ratio or CUPED comparison: lift, its standard error,
// the t-based interval and p-value (the absolute comparison's Welch df).
struct RelativeTest {
  std::optional<double> lift;
  std::optional<double> se;
  std::optional<Interval> ci;
  std::optional<double> p_value;
};

// Ratio metrics (sum of M over sum of D per arm) by the delta method.
struct RatioArmSums {
  double n = 0;
  double numerator_sum = 0;
  double numerator_sum_squares = 0;
  double denominator_sum = 0;
  double denominator_sum_squares = 0;
  double sum_of_products = 0;  // Σ M·D
};
struct RatioArm {
  std::optional<double> ratio;          // μ_M/μ_D
  std::optional<double> unit_variance;  // var_M/μ_D² + μ_M²·var_D/μ_D⁴ − 2μ_M·cov/μ_D³
  std::optional<double> variance;       // unit_variance / n
  std::optional<double> se;
};
struct RatioMetric {
  RatioArm a;
  RatioArm b;
  std::optional<double> diff;
  std::optional<double> diff_se;
  std::optional<double> df;
  std::optional<double> t;
  std::optional<double> p_value;
  std::optional<Interval> ci;
  RelativeTest relative;
};
absl::StatusOr<RatioMetric> RatioMetricTest(const RatioArmSums& a, const RatioArmSums& b,
                                            double alpha);

// CUPED (Deng et al. 2013) with θ pooled over both arms.
struct CupedArmSums {
  double n = 0;
  double post_sum = 0;
  double post_sum_squares = 0;
  double pre_sum = 0;
  double pre_sum_squares = 0;
  double post_pre_sum_of_products = 0;
};
struct CupedArm {
  double mean_post = 0;
  double mean_pre = 0;
  double adjusted_mean = 0;                  // mean_post − θ·(mean_pre − pooled_pre_mean)
  double adjusted_variance = 0;              // var_post + θ²·var_pre − 2θ·cov (per unit)
  std::optional<double> variance_reduction;  // 1 − adjusted/var_post; nullopt if var_post = 0
};
struct Cuped {
  double theta = 0;
  double pooled_pre_mean = 0;
  CupedArm a;
  CupedArm b;
  double diff = 0;
  double diff_se = 0;
  std::optional<double> df;
  std::optional<double> t;
  std::optional<double> p_value;
  std::optional<Interval> ci;
  RelativeTest relative;
};
absl::StatusOr<Cuped> CupedTest(const CupedArmSums& a, const CupedArmSums& b, double alpha);

// CUPED for ratio metrics (GrowthBook's regression-adjusted ratio,
// gbstats' RegressionAdjustedRatioStatistic): per unit a post-period
// numerator M and denominator D and a pre-period M0 and D0; each arm's
// estimate is R − θ·R0 with R = ΣM/ΣD and R0 = ΣM0/ΣD0, its variance by the
// delta method over the 4×4 sample covariance matrix Λ of (M, D, M0, D0):
// ∇ᵀΛ∇/n with ∇ = (1/μ_D, −μ_M/μ_D², −θ/μ_D0, θ·μ_M0/μ_D0²). θ minimises
// the variance of the difference: the sum over both arms of the delta
// method's cov(R, R0) over the sum of its var(R0) (unit variances, not
// weighted by n, as gbstats' compute_theta_regression_adjusted_ratio).
struct CupedRatioArmSums {
  double n = 0;
  RatioArmSums post;                       // M and D (post.n is not read)
  RatioArmSums pre;                        // M0 and D0 (pre.n is not read)
  double numerator_pre_numerator = 0;      // Σ M·M0
  double numerator_pre_denominator = 0;    // Σ M·D0
  double denominator_pre_numerator = 0;    // Σ D·M0
  double denominator_pre_denominator = 0;  // Σ D·D0
};
struct CupedRatioArm {
  std::optional<double> ratio;                   // R = μ_M/μ_D
  std::optional<double> pre_ratio;               // R0 = μ_M0/μ_D0
  std::optional<double> adjusted_ratio;          // R − θ·(R0 − pooled_pre_ratio)
  std::optional<double> unit_variance;           // the unadjusted ratio's (θ = 0)
  std::optional<double> adjusted_unit_variance;  // ∇ᵀΛ∇
  std::optional<double> variance;                // adjusted_unit_variance / n
  std::optional<double> variance_reduction;      // 1 − adjusted/unadjusted; nullopt if that is 0
};
struct CupedRatio {
  double theta = 0;
  std::optional<double> pooled_pre_ratio;  // (ΣM0_a + ΣM0_b)/(ΣD0_a + ΣD0_b)
  CupedRatioArm a;
  CupedRatioArm b;
  std::optional<double> diff;
  std::optional<double> diff_se;
  std::optional<double> df;
  std::optional<double> t;
  std::optional<double> p_value;
  std::optional<Interval> ci;
  // lift = diff/|R_a| (R_a unadjusted), variance by the delta method over
  // both arms' (M, D, M0, D0) (gbstats' frequentist_variance_relative_cuped_ratio).
  RelativeTest relative;
};
// InvalidArgument naming the field for input that cannot be analysed. A
// post-period denominator mean of 0 makes that arm's ratio, and so the
// comparison, undefined (nullopt), as in RatioMetricTest. θ = 0 (the
// unadjusted ratio analysis) when either arm's pre-period denominator mean
// is 0 or the pre-period ratios have no variance.
absl::StatusOr<CupedRatio> CupedRatioTest(const CupedRatioArmSums& a, const CupedRatioArmSums& b,
                                          double alpha);

// Sample ratio mismatch: Pearson's χ² of the counts against N·w_i/Σw. Arms with
// weight 0 get expected count 0 and are left out of χ² and of df (arms with
// weight > 0, minus 1). chi2 is nullopt when N = 0; p_value when chi2 is or
// df = 0.
struct Srm {
  std::optional<double> chi2;
  int df = 0;
  std::optional<double> p_value;
  std::vector<double> expected_counts;
};
// REQUIRES nothing: counts must be non-negative integers, weights non-negative
// and finite with a positive sum, both of one length.
absl::StatusOr<Srm> SrmTest(std::span<const double> counts, std::span<const double> weights);
// Whether GrowthBook would warn: p < 0.001.
bool SrmAlert(const Srm& srm);

// Holm and Benjamini-Hochberg adjusted p-values, in input order, computed as
// statsmodels' multipletests(p, method='holm') and ('fdr_bh') do.
struct AdjustedPValues {
  std::vector<double> holm;
  std::vector<double> bh;
};
// REQUIRES nothing: each p must be in [0, 1].
absl::StatusOr<AdjustedPValues> AdjustPValues(std::span<const double> p_values);

}  // namespace capstan::experiments::stats

#endif  // CAPSTAN_EXPERIMENTS_STATS_H_
