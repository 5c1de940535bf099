#include "experiments/stats.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>

#include <boost/math/distributions/chi_squared.hpp>
#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <boost/math/policies/policy.hpp>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "experiments/stats_distributions.h"

namespace capstan::experiments::stats {
namespace {

namespace bm = boost::math;
namespace bp = boost::math::policies;

// Every Boost.Math error returns a value (NaN or ±inf) instead of throwing, so
// a degenerate input cannot raise an exception through the engine; Finite()
// turns those values into nullopt.
using NoThrowPolicy =
    bp::policy<bp::domain_error<bp::ignore_error>, bp::pole_error<bp::ignore_error>,
               bp::overflow_error<bp::ignore_error>, bp::underflow_error<bp::ignore_error>,
               bp::evaluation_error<bp::ignore_error>, bp::rounding_error<bp::ignore_error>,
               bp::indeterminate_result_error<bp::ignore_error>>;
using StudentT = bm::students_t_distribution<double, NoThrowPolicy>;
using Normal = bm::normal_distribution<double, NoThrowPolicy>;
using ChiSquared = bm::chi_squared_distribution<double, NoThrowPolicy>;

std::optional<double> Finite(double x) {
  if (!std::isfinite(x)) return std::nullopt;
  return x;
}

bool UsableDf(double df) { return std::isfinite(df) && df > 0; }

// absl::StrCat in this abseil build takes absl::string_view, not std::string_view.
std::string FieldName(std::string_view arm, std::string_view field) {
  return absl::StrCat(absl::string_view(arm.data(), arm.size()), ".",
                      absl::string_view(field.data(), field.size()));
}

absl::Status InvalidField(const std::string& field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " ", absl::string_view(what.data(), what.size())));
}

absl::Status CheckN(double n, std::string_view arm) {
  if (!std::isfinite(n) || n < 2) {
    return InvalidField(FieldName(arm, "n"), "must be a finite number >= 2");
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(double x, const std::string& field) {
  if (!std::isfinite(x)) return InvalidField(field, "must be a finite number");
  return absl::OkStatus();
}

// A finite sum; a sum of squares must also be >= 0.
absl::Status CheckSum(double value, std::string_view arm, std::string_view field) {
  std::string name = FieldName(arm, field);
  RETURN_IF_ERROR(CheckFinite(value, name));
  if (field.ends_with("sum_squares") && value < 0) return InvalidField(name, "must be >= 0");
  return absl::OkStatus();
}

std::optional<Interval> Around(double center, std::optional<double> halfwidth) {
  if (!halfwidth.has_value()) return std::nullopt;
  Interval ci{center - *halfwidth, center + *halfwidth};
  if (!std::isfinite(ci.lower) || !std::isfinite(ci.upper)) return std::nullopt;
  return ci;
}

// The relative part shared by ratio metrics and CUPED: lift with a given
// variance, tested with the absolute comparison's df.
RelativeTest Relative(std::optional<double> lift, std::optional<double> variance,
                      std::optional<double> df, double alpha) {
  RelativeTest out;
  if (!lift.has_value() || !variance.has_value()) return out;
  out.lift = lift;
  out.se = Finite(std::sqrt(*variance));
  if (!out.se.has_value()) return out;
  TTest test = TwoSidedTTest(*lift, *out.se, df, alpha);
  out.ci = test.ci;
  out.p_value = test.p_value;
  return out;
}

}  // namespace

std::optional<double> StudentTTwoSidedP(double t, double df) {
  if (!std::isfinite(t) || !UsableDf(df)) return std::nullopt;
  StudentT dist(df);
  return Finite(2 * bm::cdf(bm::complement(dist, std::fabs(t))));
}

std::optional<double> StudentTUpperQuantile(double upper_tail, double df) {
  if (!(upper_tail > 0 && upper_tail < 1) || !UsableDf(df)) return std::nullopt;
  StudentT dist(df);
  return Finite(bm::quantile(bm::complement(dist, upper_tail)));
}

std::optional<double> NormalUpperQuantile(double upper_tail) {
  if (!(upper_tail > 0 && upper_tail < 1)) return std::nullopt;
  return Finite(bm::quantile(bm::complement(Normal(0, 1), upper_tail)));
}

std::optional<double> NormalCdf(double x) {
  if (std::isnan(x)) return std::nullopt;
  return Finite(bm::cdf(Normal(0, 1), x));
}

std::optional<double> NormalSf(double x) {
  if (std::isnan(x)) return std::nullopt;
  return Finite(bm::cdf(bm::complement(Normal(0, 1), x)));
}

std::optional<double> ChiSquaredSf(double x, double df) {
  if (!std::isfinite(x) || x < 0 || !UsableDf(df)) return std::nullopt;
  return Finite(bm::cdf(bm::complement(ChiSquared(df), x)));
}

double SampleVarianceFromSums(double n, double sum, double sum_squares) {
  double variance = (sum_squares - sum * sum / n) / (n - 1);
  return variance > 0 ? variance : 0;
}

double SampleCovarianceFromSums(double n, double sum_x, double sum_y, double sum_xy) {
  return (sum_xy - sum_x * sum_y / n) / (n - 1);
}

absl::Status ValidateAlpha(double alpha) {
  if (!(alpha > 0 && alpha < 1)) {
    return absl::InvalidArgumentError("alpha must be a number in (0, 1)");
  }
  return absl::OkStatus();
}

absl::StatusOr<ArmMoments> ArmFromMeanVariance(double n, double mean, double variance,
                                               std::string_view field) {
  RETURN_IF_ERROR(CheckN(n, field));
  RETURN_IF_ERROR(CheckFinite(mean, FieldName(field, "mean")));
  if (!std::isfinite(variance) || variance < 0) {
    return InvalidField(FieldName(field, "variance"), "must be a finite number >= 0");
  }
  return ArmMoments{n, mean, variance};
}

absl::StatusOr<ArmMoments> ArmFromSums(double n, double sum, double sum_squares,
                                       std::string_view field) {
  RETURN_IF_ERROR(CheckN(n, field));
  RETURN_IF_ERROR(CheckFinite(sum, FieldName(field, "sum")));
  RETURN_IF_ERROR(CheckFinite(sum_squares, FieldName(field, "sum_squares")));
  if (sum_squares < 0) return InvalidField(FieldName(field, "sum_squares"), "must be >= 0");
  return ArmMoments{n, sum / n, SampleVarianceFromSums(n, sum, sum_squares)};
}

std::optional<double> WelchDegreesOfFreedom(double variance_of_mean_a, double n_a,
                                            double variance_of_mean_b, double n_b) {
  double total = variance_of_mean_a + variance_of_mean_b;
  if (!(total > 0)) return std::nullopt;
  double denominator = variance_of_mean_a * variance_of_mean_a / (n_a - 1) +
                       variance_of_mean_b * variance_of_mean_b / (n_b - 1);
  // Both squares can underflow to 0 while the sum does not.
  if (!(denominator > 0)) return std::nullopt;
  return Finite(total * total / denominator);
}

TTest TwoSidedTTest(double estimate, double se, std::optional<double> df, double alpha) {
  TTest out;
  out.estimate = estimate;
  out.se = se;
  out.df = df;
  if (!(se > 0) || !std::isfinite(se) || !df.has_value()) return out;
  out.t = Finite(estimate / se);
  if (!out.t.has_value()) return out;
  out.p_value = StudentTTwoSidedP(*out.t, *df);
  std::optional<double> critical = StudentTUpperQuantile(alpha / 2, *df);
  if (critical.has_value()) out.ci = Around(estimate, *critical * se);
  return out;
}

TTest WelchTTest(const ArmMoments& a, const ArmMoments& b, double alpha) {
  double variance_of_mean_a = a.variance / a.n;
  double variance_of_mean_b = b.variance / b.n;
  std::optional<double> df =
      WelchDegreesOfFreedom(variance_of_mean_a, a.n, variance_of_mean_b, b.n);
  return TwoSidedTTest(b.mean - a.mean, std::sqrt(variance_of_mean_a + variance_of_mean_b), df,
                       alpha);
}

RelativeLift RelativeLiftTest(const ArmMoments& a, const ArmMoments& b, double alpha) {
  RelativeLift out;
  double variance_of_mean_a = a.variance / a.n;
  double variance_of_mean_b = b.variance / b.n;
  // The absolute comparison's df is defined even where the lift is not.
  out.df = WelchDegreesOfFreedom(variance_of_mean_a, a.n, variance_of_mean_b, b.n);
  if (a.mean == 0) return out;
  double mean_a_squared = a.mean * a.mean;
  out.lift = Finite((b.mean - a.mean) / std::fabs(a.mean));
  out.variance = Finite(variance_of_mean_b / mean_a_squared +
                        b.mean * b.mean * variance_of_mean_a / (mean_a_squared * mean_a_squared));
  if (!out.lift.has_value() || !out.variance.has_value()) {
    RelativeLift undefined;
    undefined.df = out.df;
    return undefined;
  }
  out.se = std::sqrt(*out.variance);
  TTest test = TwoSidedTTest(*out.lift, *out.se, out.df, alpha);
  out.p_value = test.p_value;
  out.ci = test.ci;
  if (*out.se > 0) {
    std::optional<double> z = NormalUpperQuantile(alpha / 2);
    if (z.has_value()) out.ci_normal = Around(*out.lift, *z * *out.se);
  }
  return out;
}

absl::StatusOr<RatioMetric> RatioMetricTest(const RatioArmSums& a, const RatioArmSums& b,
                                            double alpha) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  for (const auto& [arm, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}}) {
    RETURN_IF_ERROR(CheckN(arm->n, name));
    const std::pair<double, const char*> fields[] = {
        {arm->numerator_sum, "numerator.sum"},
        {arm->numerator_sum_squares, "numerator.sum_squares"},
        {arm->denominator_sum, "denominator.sum"},
        {arm->denominator_sum_squares, "denominator.sum_squares"},
        {arm->sum_of_products, "sum_of_products"}};
    for (const auto& [value, field] : fields) RETURN_IF_ERROR(CheckSum(value, name, field));
  }
  RatioMetric out;
  auto arm_result = [](const RatioArmSums& sums) {
    RatioArm arm;
    double mean_m = sums.numerator_sum / sums.n;
    double mean_d = sums.denominator_sum / sums.n;
    if (mean_d == 0) return arm;
    double var_m = SampleVarianceFromSums(sums.n, sums.numerator_sum, sums.numerator_sum_squares);
    double var_d =
        SampleVarianceFromSums(sums.n, sums.denominator_sum, sums.denominator_sum_squares);
    double cov = SampleCovarianceFromSums(sums.n, sums.numerator_sum, sums.denominator_sum,
                                          sums.sum_of_products);
    double mean_d_squared = mean_d * mean_d;
    double unit_variance = var_m / mean_d_squared +
                           mean_m * mean_m * var_d / (mean_d_squared * mean_d_squared) -
                           2 * mean_m * cov / (mean_d_squared * mean_d);
    // The delta method's variance is a quadratic form of a covariance matrix,
    // so it is >= 0; a negative value is rounding.
    unit_variance = std::max(unit_variance, 0.0);
    arm.ratio = Finite(mean_m / mean_d);
    arm.unit_variance = Finite(unit_variance);
    if (arm.unit_variance.has_value()) {
      arm.variance = *arm.unit_variance / sums.n;
      arm.se = std::sqrt(*arm.variance);
    }
    return arm;
  };
  out.a = arm_result(a);
  out.b = arm_result(b);
  if (!out.a.ratio || !out.b.ratio || !out.a.variance || !out.b.variance) return out;
  out.diff = *out.b.ratio - *out.a.ratio;
  out.diff_se = std::sqrt(*out.a.variance + *out.b.variance);
  out.df = WelchDegreesOfFreedom(*out.a.variance, a.n, *out.b.variance, b.n);
  TTest test = TwoSidedTTest(*out.diff, *out.diff_se, out.df, alpha);
  out.t = test.t;
  out.p_value = test.p_value;
  out.ci = test.ci;
  double ratio_a = *out.a.ratio, ratio_b = *out.b.ratio;
  if (ratio_a != 0) {
    double ratio_a_squared = ratio_a * ratio_a;
    out.relative =
        Relative(Finite(*out.diff / std::fabs(ratio_a)),
                 Finite(*out.b.variance / ratio_a_squared +
                        ratio_b * ratio_b * *out.a.variance / (ratio_a_squared * ratio_a_squared)),
                 out.df, alpha);
  }
  return out;
}

absl::StatusOr<Cuped> CupedTest(const CupedArmSums& a, const CupedArmSums& b, double alpha) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  for (const auto& [arm, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}}) {
    RETURN_IF_ERROR(CheckN(arm->n, name));
    const std::pair<double, const char*> fields[] = {
        {arm->post_sum, "post.sum"},
        {arm->post_sum_squares, "post.sum_squares"},
        {arm->pre_sum, "pre.sum"},
        {arm->pre_sum_squares, "pre.sum_squares"},
        {arm->post_pre_sum_of_products, "post_pre_sum_of_products"}};
    for (const auto& [value, field] : fields) RETURN_IF_ERROR(CheckSum(value, name, field));
  }
  Cuped out;
  // θ from the sums of both arms together (gbstats compute_theta).
  double n = a.n + b.n;
  double pooled_var_pre =
      SampleVarianceFromSums(n, a.pre_sum + b.pre_sum, a.pre_sum_squares + b.pre_sum_squares);
  double pooled_var_post =
      SampleVarianceFromSums(n, a.post_sum + b.post_sum, a.post_sum_squares + b.post_sum_squares);
  if (pooled_var_pre > 0 && pooled_var_post > 0) {
    double pooled_cov =
        SampleCovarianceFromSums(n, a.post_sum + b.post_sum, a.pre_sum + b.pre_sum,
                                 a.post_pre_sum_of_products + b.post_pre_sum_of_products);
    out.theta = pooled_cov / pooled_var_pre;
    if (!std::isfinite(out.theta)) out.theta = 0;
  }
  out.pooled_pre_mean = (a.pre_sum + b.pre_sum) / n;
  const double theta = out.theta;
  struct ArmVariances {
    double post, pre, cov;
  };
  auto arm_result = [&](const CupedArmSums& sums, ArmVariances& variances) {
    CupedArm arm;
    arm.mean_post = sums.post_sum / sums.n;
    arm.mean_pre = sums.pre_sum / sums.n;
    arm.adjusted_mean = arm.mean_post - theta * (arm.mean_pre - out.pooled_pre_mean);
    variances.post = SampleVarianceFromSums(sums.n, sums.post_sum, sums.post_sum_squares);
    variances.pre = SampleVarianceFromSums(sums.n, sums.pre_sum, sums.pre_sum_squares);
    variances.cov = SampleCovarianceFromSums(sums.n, sums.post_sum, sums.pre_sum,
                                             sums.post_pre_sum_of_products);
    arm.adjusted_variance =
        std::max(variances.post + theta * theta * variances.pre - 2 * theta * variances.cov, 0.0);
    if (variances.post > 0) {
      arm.variance_reduction = 1 - arm.adjusted_variance / variances.post;
    }
    return arm;
  };
  ArmVariances var_a{}, var_b{};
  out.a = arm_result(a, var_a);
  out.b = arm_result(b, var_b);
  out.diff = out.b.adjusted_mean - out.a.adjusted_mean;
  double variance_of_mean_a = out.a.adjusted_variance / a.n;
  double variance_of_mean_b = out.b.adjusted_variance / b.n;
  out.diff_se = std::sqrt(variance_of_mean_a + variance_of_mean_b);
  out.df = WelchDegreesOfFreedom(variance_of_mean_a, a.n, variance_of_mean_b, b.n);
  TTest test = TwoSidedTTest(out.diff, out.diff_se, out.df, alpha);
  out.t = test.t;
  out.p_value = test.p_value;
  out.ci = test.ci;
  // Relative: lift over the unadjusted control mean, variance as gbstats'
  // frequentist_variance_relative_cuped.
  double mean_a = out.a.mean_post, mean_b = out.b.mean_post;
  if (mean_a != 0) {
    double mean_a_squared = mean_a * mean_a;
    double variance =
        (var_b.post + theta * theta * var_b.pre - 2 * theta * var_b.cov) / (b.n * mean_a_squared) +
        (var_a.post * mean_b * mean_b / mean_a_squared - 2 * theta * var_a.cov * mean_b / mean_a +
         theta * theta * var_a.pre) /
            (a.n * mean_a_squared);
    out.relative = Relative(Finite(out.diff / std::fabs(mean_a)), Finite(std::max(variance, 0.0)),
                            out.df, alpha);
  }
  return out;
}

namespace {

// (M, D, M0, D0) of one unit: a gradient over their means, and their 4×4
// sample covariance matrix.
using Vector4 = std::array<double, 4>;
using Matrix4 = std::array<Vector4, 4>;

Matrix4 CupedRatioCovariance(const CupedRatioArmSums& s) {
  const double sums[4] = {s.post.numerator_sum, s.post.denominator_sum, s.pre.numerator_sum,
                          s.pre.denominator_sum};
  const double squares[4] = {s.post.numerator_sum_squares, s.post.denominator_sum_squares,
                             s.pre.numerator_sum_squares, s.pre.denominator_sum_squares};
  // products[i][j] = Σ v_i·v_j for i < j.
  double products[4][4] = {};
  products[0][1] = s.post.sum_of_products;
  products[0][2] = s.numerator_pre_numerator;
  products[0][3] = s.numerator_pre_denominator;
  products[1][2] = s.denominator_pre_numerator;
  products[1][3] = s.denominator_pre_denominator;
  products[2][3] = s.pre.sum_of_products;
  Matrix4 covariance{};
  for (int i = 0; i < 4; ++i) {
    covariance[i][i] = SampleVarianceFromSums(s.n, sums[i], squares[i]);
    for (int j = i + 1; j < 4; ++j) {
      covariance[i][j] = covariance[j][i] =
          SampleCovarianceFromSums(s.n, sums[i], sums[j], products[i][j]);
    }
  }
  return covariance;
}

// xᵀ·m·y.
double Bilinear(const Vector4& x, const Matrix4& m, const Vector4& y) {
  double total = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) total += x[i] * m[i][j] * y[j];
  }
  return total;
}

// Σ|x_i·m_ij·y_j|: the size of the terms Bilinear cancels.
double BilinearMagnitude(const Vector4& x, const Matrix4& m, const Vector4& y) {
  double total = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) total += std::fabs(x[i] * m[i][j] * y[j]);
  }
  return total;
}

// A pre-period ratio equal in every unit (M0 = c·D0) has delta-method
// variance 0, which the sums give as a cancellation's rounding: below this
// fraction of the terms it is 0, else θ would be rounding over rounding.
constexpr double kCancelledVariance = 1e-9;

Vector4 Combine(const Vector4& x, double scale_y, const Vector4& y, double scale_x = 1) {
  Vector4 out;
  for (int i = 0; i < 4; ++i) out[i] = scale_x * x[i] + scale_y * y[i];
  return out;
}

// gbstats leaves the adjustment out when |θ| is below this
// (create_theta_adjusted_statistics): the answer is then the ratio's own.
constexpr double kNegligibleTheta = 1e-8;

}  // namespace

absl::StatusOr<CupedRatio> CupedRatioTest(const CupedRatioArmSums& a, const CupedRatioArmSums& b,
                                          double alpha) {
  RETURN_IF_ERROR(ValidateAlpha(alpha));
  for (const auto& [arm, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}}) {
    RETURN_IF_ERROR(CheckN(arm->n, name));
    const std::pair<double, const char*> fields[] = {
        {arm->post.numerator_sum, "numerator.sum"},
        {arm->post.numerator_sum_squares, "numerator.sum_squares"},
        {arm->post.denominator_sum, "denominator.sum"},
        {arm->post.denominator_sum_squares, "denominator.sum_squares"},
        {arm->post.sum_of_products, "sum_of_products"},
        {arm->pre.numerator_sum, "pre.numerator.sum"},
        {arm->pre.numerator_sum_squares, "pre.numerator.sum_squares"},
        {arm->pre.denominator_sum, "pre.denominator.sum"},
        {arm->pre.denominator_sum_squares, "pre.denominator.sum_squares"},
        {arm->pre.sum_of_products, "pre.sum_of_products"},
        {arm->numerator_pre_numerator, "post_pre_sum_of_products.numerator_numerator"},
        {arm->numerator_pre_denominator, "post_pre_sum_of_products.numerator_denominator"},
        {arm->denominator_pre_numerator, "post_pre_sum_of_products.denominator_numerator"},
        {arm->denominator_pre_denominator, "post_pre_sum_of_products.denominator_denominator"}};
    for (const auto& [value, field] : fields) RETURN_IF_ERROR(CheckSum(value, name, field));
  }
  // Per arm: the means, Λ, and the gradients of R (g) and of R0 (h) over
  // the means of (M, D, M0, D0); a zero denominator mean leaves its
  // gradient 0 and its ratio undefined.
  struct Parts {
    double mean_m, mean_d, mean_m0, mean_d0;
    Matrix4 covariance;
    Vector4 g{}, h{};
  };
  auto parts_of = [](const CupedRatioArmSums& s) {
    Parts p{s.post.numerator_sum / s.n,
            s.post.denominator_sum / s.n,
            s.pre.numerator_sum / s.n,
            s.pre.denominator_sum / s.n,
            CupedRatioCovariance(s),
            {},
            {}};
    if (p.mean_d != 0) p.g = {1 / p.mean_d, -p.mean_m / (p.mean_d * p.mean_d), 0, 0};
    if (p.mean_d0 != 0) p.h = {0, 0, 1 / p.mean_d0, -p.mean_m0 / (p.mean_d0 * p.mean_d0)};
    return p;
  };
  const Parts pa = parts_of(a), pb = parts_of(b);
  CupedRatio out;
  const double pre_denominator = a.pre.denominator_sum + b.pre.denominator_sum;
  if (pre_denominator != 0) {
    out.pooled_pre_ratio = Finite((a.pre.numerator_sum + b.pre.numerator_sum) / pre_denominator);
  }
  const bool defined = pa.mean_d != 0 && pb.mean_d != 0;
  if (defined && pa.mean_d0 != 0 && pb.mean_d0 != 0 && out.pooled_pre_ratio.has_value()) {
    double var_pre = Bilinear(pa.h, pa.covariance, pa.h) + Bilinear(pb.h, pb.covariance, pb.h);
    double cov = Bilinear(pa.g, pa.covariance, pa.h) + Bilinear(pb.g, pb.covariance, pb.h);
    double var_pre_terms =
        BilinearMagnitude(pa.h, pa.covariance, pa.h) + BilinearMagnitude(pb.h, pb.covariance, pb.h);
    if (var_pre > kCancelledVariance * var_pre_terms) out.theta = cov / var_pre;
    if (!std::isfinite(out.theta) || std::fabs(out.theta) < kNegligibleTheta) out.theta = 0;
  }
  const double theta = out.theta;
  auto arm_result = [&](const Parts& p, double n) {
    CupedRatioArm arm;
    if (p.mean_d0 != 0) arm.pre_ratio = Finite(p.mean_m0 / p.mean_d0);
    if (p.mean_d == 0) return arm;
    arm.ratio = Finite(p.mean_m / p.mean_d);
    if (!arm.ratio.has_value()) return arm;
    if (theta == 0) {
      arm.adjusted_ratio = arm.ratio;
    } else if (arm.pre_ratio.has_value() && out.pooled_pre_ratio.has_value()) {
      arm.adjusted_ratio = Finite(*arm.ratio - theta * (*arm.pre_ratio - *out.pooled_pre_ratio));
    }
    // Quadratic forms of a covariance matrix are >= 0: below is rounding.
    double unadjusted = std::max(Bilinear(p.g, p.covariance, p.g), 0.0);
    Vector4 adjusted_gradient = Combine(p.g, -theta, p.h);
    double adjusted = std::max(Bilinear(adjusted_gradient, p.covariance, adjusted_gradient), 0.0);
    arm.unit_variance = Finite(unadjusted);
    arm.adjusted_unit_variance = Finite(adjusted);
    arm.variance = Finite(adjusted / n);
    if (unadjusted > 0) arm.variance_reduction = Finite(1 - adjusted / unadjusted);
    return arm;
  };
  out.a = arm_result(pa, a.n);
  out.b = arm_result(pb, b.n);
  if (!defined || !out.a.adjusted_ratio || !out.b.adjusted_ratio || !out.a.variance ||
      !out.b.variance) {
    return out;
  }
  out.diff = Finite(*out.b.adjusted_ratio - *out.a.adjusted_ratio);
  out.diff_se = Finite(std::sqrt(*out.a.variance + *out.b.variance));
  if (!out.diff || !out.diff_se) return out;
  out.df = WelchDegreesOfFreedom(*out.a.variance, a.n, *out.b.variance, b.n);
  TTest test = TwoSidedTTest(*out.diff, *out.diff_se, out.df, alpha);
  out.t = test.t;
  out.p_value = test.p_value;
  out.ci = test.ci;
  // Relative: L = (A_b − A_a)/|R_a| with A = R − θ·R0. Over control's
  // means, ∇L = −(g_a − θ·h_a)/|R_a| − (A_b − A_a)·sign(R_a)·g_a/R_a²; over
  // treatment's, (g_b − θ·h_b)/|R_a|.
  const double ratio_a = *out.a.ratio;
  if (ratio_a != 0) {
    const double scale = std::fabs(ratio_a);
    const double sign = ratio_a > 0 ? 1 : -1;
    Vector4 control =
        Combine(Combine(pa.g, -theta, pa.h), -*out.diff * sign / (scale * scale), pa.g, -1 / scale);
    Vector4 treatment = Combine(pb.g, -theta, pb.h, 1);
    for (double& x : treatment) x /= scale;
    double variance = Bilinear(control, pa.covariance, control) / a.n +
                      Bilinear(treatment, pb.covariance, treatment) / b.n;
    out.relative =
        Relative(Finite(*out.diff / scale), Finite(std::max(variance, 0.0)), out.df, alpha);
  }
  return out;
}

absl::StatusOr<Srm> SrmTest(std::span<const double> counts, std::span<const double> weights) {
  if (counts.size() != weights.size()) {
    return absl::InvalidArgumentError("counts and weights must have the same length");
  }
  if (counts.empty()) return absl::InvalidArgumentError("counts must not be empty");
  double total_count = 0, total_weight = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (!std::isfinite(counts[i]) || counts[i] < 0 || counts[i] != std::floor(counts[i])) {
      return InvalidField(absl::StrCat("counts[", i, "]"), "must be an integer >= 0");
    }
    if (!std::isfinite(weights[i]) || weights[i] < 0) {
      return InvalidField(absl::StrCat("weights[", i, "]"), "must be a finite number >= 0");
    }
    total_count += counts[i];
    total_weight += weights[i];
  }
  if (!(total_weight > 0) || !std::isfinite(total_weight)) {
    return absl::InvalidArgumentError("weights must have a positive, finite sum");
  }
  Srm out;
  int arms_with_weight = 0;
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    double expected = total_count * weights[i] / total_weight;
    out.expected_counts.push_back(expected);
    if (weights[i] > 0) {
      ++arms_with_weight;
      if (expected > 0) chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
  }
  out.df = arms_with_weight - 1;
  if (total_count > 0) out.chi2 = Finite(chi2);
  if (out.chi2.has_value() && out.df > 0) out.p_value = ChiSquaredSf(*out.chi2, out.df);
  return out;
}

bool SrmAlert(const Srm& srm) { return srm.p_value.has_value() && *srm.p_value < kSrmAlertPValue; }

absl::StatusOr<AdjustedPValues> AdjustPValues(std::span<const double> p_values) {
  const size_t count = p_values.size();
  for (size_t i = 0; i < count; ++i) {
    if (!(p_values[i] >= 0 && p_values[i] <= 1)) {
      return InvalidField(absl::StrCat("p_values[", i, "]"), "must be a number in [0, 1]");
    }
  }
  // statsmodels sorts ascending (np.argsort), adjusts in sorted order and puts
  // the answers back; ties get equal answers either way, so a stable sort
  // gives its results.
  std::vector<size_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return p_values[x] < p_values[y]; });
  AdjustedPValues out;
  out.holm.resize(count);
  out.bh.resize(count);
  // Holm: p_(i)·(m − i) for 0-based rank i, made non-decreasing by a running
  // maximum, capped at 1.
  double running_max = 0;
  for (size_t rank = 0; rank < count; ++rank) {
    double raw = p_values[order[rank]] * static_cast<double>(count - rank);
    running_max = std::max(running_max, raw);
    out.holm[order[rank]] = std::min(running_max, 1.0);
  }
  // Benjamini-Hochberg: p_(i) / ((i + 1)/m), made non-increasing from the top
  // by a running minimum, capped at 1 (statsmodels divides by the ecdf factor
  // rather than multiplying by m/(i + 1); the rounding is the same as theirs).
  double running_min = 1;
  for (size_t rank = count; rank-- > 0;) {
    double ecdf_factor = static_cast<double>(rank + 1) / static_cast<double>(count);
    double raw = p_values[order[rank]] / ecdf_factor;
    running_min = rank + 1 == count ? raw : std::min(running_min, raw);
    out.bh[order[rank]] = std::min(running_min, 1.0);
  }
  return out;
}

}  // namespace capstan::experiments::stats
