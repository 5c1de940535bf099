#include "experiments/analyze.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "experiments/power.h"
#include "experiments/sequential.h"
#include "experiments/stats.h"

namespace capstan::experiments {
namespace {

using stats::Interval;

// ---- reading the request ----

std::string Path(const std::string& parent, std::string_view key) {
  std::string path = parent;
  if (!path.empty()) path += '.';
  path.append(key);
  return path;
}

absl::StatusOr<const Json*> ObjectField(const Json& object, std::string_view key,
                                        const std::string& parent) {
  auto it = object.find(key);
  if (it == object.end()) return absl::InvalidArgumentError("missing field: " + Path(parent, key));
  if (!it->is_object()) return absl::InvalidArgumentError(Path(parent, key) + " must be an object");
  return &*it;
}

absl::StatusOr<double> NumberField(const Json& object, std::string_view key,
                                   const std::string& parent) {
  auto it = object.find(key);
  if (it == object.end()) return absl::InvalidArgumentError("missing field: " + Path(parent, key));
  if (!it->is_number()) return absl::InvalidArgumentError(Path(parent, key) + " must be a number");
  return it->get<double>();
}

absl::StatusOr<double> NumberFieldOr(const Json& object, std::string_view key, double fallback) {
  if (!object.contains(key)) return fallback;
  return NumberField(object, key, "");
}

absl::StatusOr<std::vector<double>> NumberArray(const Json& object, std::string_view key) {
  auto it = object.find(key);
  if (it == object.end()) return absl::InvalidArgumentError("missing field: " + std::string(key));
  if (!it->is_array()) return absl::InvalidArgumentError(std::string(key) + " must be an array");
  std::vector<double> numbers;
  numbers.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& value = (*it)[i];
    if (!value.is_number()) {
      return absl::InvalidArgumentError(std::string(key) + "[" + std::to_string(i) +
                                        "] must be a number");
    }
    numbers.push_back(value.get<double>());
  }
  return numbers;
}

absl::StatusOr<double> Alpha(const Json& request) {
  ASSIGN_OR_RETURN(double alpha, NumberFieldOr(request, "alpha", stats::kDefaultAlpha));
  RETURN_IF_ERROR(stats::ValidateAlpha(alpha));
  return alpha;
}

// An arm given as {n, mean, variance} or {n, sum, sum_squares}.
absl::StatusOr<stats::ArmMoments> Moments(const Json& request, const char* name) {
  ASSIGN_OR_RETURN(const Json* arm, ObjectField(request, name, ""));
  ASSIGN_OR_RETURN(double n, NumberField(*arm, "n", name));
  if (arm->contains("mean") || arm->contains("variance")) {
    ASSIGN_OR_RETURN(double mean, NumberField(*arm, "mean", name));
    ASSIGN_OR_RETURN(double variance, NumberField(*arm, "variance", name));
    return stats::ArmFromMeanVariance(n, mean, variance, name);
  }
  if (!arm->contains("sum") && !arm->contains("sum_squares")) {
    return absl::InvalidArgumentError(std::string(name) +
                                      " must have mean and variance, or sum and sum_squares");
  }
  ASSIGN_OR_RETURN(double sum, NumberField(*arm, "sum", name));
  ASSIGN_OR_RETURN(double sum_squares, NumberField(*arm, "sum_squares", name));
  return stats::ArmFromSums(n, sum, sum_squares, name);
}

// {sum, sum_squares} under `key` of an arm.
absl::Status Sums(const Json& arm, std::string_view key, const std::string& parent, double& sum,
                  double& sum_squares) {
  ASSIGN_OR_RETURN(const Json* object, ObjectField(arm, key, parent));
  std::string path = Path(parent, key);
  ASSIGN_OR_RETURN(sum, NumberField(*object, "sum", path));
  ASSIGN_OR_RETURN(sum_squares, NumberField(*object, "sum_squares", path));
  return absl::OkStatus();
}

absl::StatusOr<stats::RatioArmSums> RatioArm(const Json& request, const char* name) {
  ASSIGN_OR_RETURN(const Json* arm, ObjectField(request, name, ""));
  stats::RatioArmSums sums;
  ASSIGN_OR_RETURN(sums.n, NumberField(*arm, "n", name));
  RETURN_IF_ERROR(Sums(*arm, "numerator", name, sums.numerator_sum, sums.numerator_sum_squares));
  RETURN_IF_ERROR(
      Sums(*arm, "denominator", name, sums.denominator_sum, sums.denominator_sum_squares));
  ASSIGN_OR_RETURN(sums.sum_of_products, NumberField(*arm, "sum_of_products", name));
  return sums;
}

absl::StatusOr<stats::CupedArmSums> CupedArm(const Json& request, const char* name) {
  ASSIGN_OR_RETURN(const Json* arm, ObjectField(request, name, ""));
  stats::CupedArmSums sums;
  ASSIGN_OR_RETURN(sums.n, NumberField(*arm, "n", name));
  RETURN_IF_ERROR(Sums(*arm, "post", name, sums.post_sum, sums.post_sum_squares));
  RETURN_IF_ERROR(Sums(*arm, "pre", name, sums.pre_sum, sums.pre_sum_squares));
  ASSIGN_OR_RETURN(sums.post_pre_sum_of_products,
                   NumberField(*arm, "post_pre_sum_of_products", name));
  return sums;
}

// ratioMetric's arm plus "pre" (the same shape without n: the pre-period
// numerator and denominator) and "post_pre_sum_of_products" (Σ of each
// post-period variable times each pre-period one).
absl::StatusOr<stats::CupedRatioArmSums> CupedRatioArm(const Json& request, const char* name) {
  ASSIGN_OR_RETURN(const Json* arm, ObjectField(request, name, ""));
  stats::CupedRatioArmSums sums;
  ASSIGN_OR_RETURN(sums.n, NumberField(*arm, "n", name));
  RETURN_IF_ERROR(
      Sums(*arm, "numerator", name, sums.post.numerator_sum, sums.post.numerator_sum_squares));
  RETURN_IF_ERROR(Sums(*arm, "denominator", name, sums.post.denominator_sum,
                       sums.post.denominator_sum_squares));
  ASSIGN_OR_RETURN(sums.post.sum_of_products, NumberField(*arm, "sum_of_products", name));
  const std::string pre_path = Path(name, "pre");
  ASSIGN_OR_RETURN(const Json* pre, ObjectField(*arm, "pre", name));
  RETURN_IF_ERROR(
      Sums(*pre, "numerator", pre_path, sums.pre.numerator_sum, sums.pre.numerator_sum_squares));
  RETURN_IF_ERROR(Sums(*pre, "denominator", pre_path, sums.pre.denominator_sum,
                       sums.pre.denominator_sum_squares));
  ASSIGN_OR_RETURN(sums.pre.sum_of_products, NumberField(*pre, "sum_of_products", pre_path));
  const std::string cross_path = Path(name, "post_pre_sum_of_products");
  ASSIGN_OR_RETURN(const Json* cross, ObjectField(*arm, "post_pre_sum_of_products", name));
  ASSIGN_OR_RETURN(sums.numerator_pre_numerator,
                   NumberField(*cross, "numerator_numerator", cross_path));
  ASSIGN_OR_RETURN(sums.numerator_pre_denominator,
                   NumberField(*cross, "numerator_denominator", cross_path));
  ASSIGN_OR_RETURN(sums.denominator_pre_numerator,
                   NumberField(*cross, "denominator_numerator", cross_path));
  ASSIGN_OR_RETURN(sums.denominator_pre_denominator,
                   NumberField(*cross, "denominator_denominator", cross_path));
  return sums;
}

// ---- writing the answer: undefined and non-finite numbers are null ----

Json Number(std::optional<double> value) {
  if (!value.has_value() || !std::isfinite(*value)) return Json(nullptr);
  return Json(*value);
}

Json Range(std::optional<Interval> interval) {
  if (!interval.has_value()) return Json(nullptr);
  return Json::array({Number(interval->lower), Number(interval->upper)});
}

Json Numbers(const std::vector<double>& values) {
  Json out = Json::array();
  for (double v : values) out.push_back(Number(v));
  return out;
}

Json RelativeJson(const stats::RelativeTest& relative) {
  Json out = Json::object();
  out["lift"] = Number(relative.lift);
  out["se"] = Number(relative.se);
  out["ci"] = Range(relative.ci);
  out["p_value"] = Number(relative.p_value);
  return out;
}

// ---- the ops ----

absl::StatusOr<Json> WelchTTestOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::ArmMoments a, Moments(request, "a"));
  ASSIGN_OR_RETURN(stats::ArmMoments b, Moments(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  stats::TTest test = stats::WelchTTest(a, b, alpha);
  Json out = Json::object();
  out["diff"] = Number(test.estimate);
  out["se"] = Number(test.se);
  out["t"] = Number(test.t);
  out["df"] = Number(test.df);
  out["p_value"] = Number(test.p_value);
  out["ci"] = Range(test.ci);
  return out;
}

absl::StatusOr<Json> RelativeLiftOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::ArmMoments a, Moments(request, "a"));
  ASSIGN_OR_RETURN(stats::ArmMoments b, Moments(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  stats::RelativeLift lift = stats::RelativeLiftTest(a, b, alpha);
  Json out = Json::object();
  out["lift"] = Number(lift.lift);
  out["variance"] = Number(lift.variance);
  out["se"] = Number(lift.se);
  out["df"] = Number(lift.df);
  out["p_value"] = Number(lift.p_value);
  out["ci"] = Range(lift.ci);
  out["ci_normal"] = Range(lift.ci_normal);
  return out;
}

// The comparison every delta-method test answers with (ratio, CUPED, CUPED
// for ratios): the difference B - A, its standard error, degrees of freedom,
// t, p-value, CI and the relative lift.
template <typename Comparison>
void PutComparison(const Comparison& c, Json* out) {
  (*out)["diff"] = Number(c.diff);
  (*out)["diff_se"] = Number(c.diff_se);
  (*out)["df"] = Number(c.df);
  (*out)["t"] = Number(c.t);
  (*out)["p_value"] = Number(c.p_value);
  (*out)["ci"] = Range(c.ci);
  (*out)["relative"] = RelativeJson(c.relative);
}

absl::StatusOr<Json> RatioMetricOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::RatioArmSums a, RatioArm(request, "a"));
  ASSIGN_OR_RETURN(stats::RatioArmSums b, RatioArm(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  ASSIGN_OR_RETURN(stats::RatioMetric ratio, stats::RatioMetricTest(a, b, alpha));
  auto arm_json = [](const stats::RatioArm& arm) {
    Json out = Json::object();
    out["ratio"] = Number(arm.ratio);
    out["unit_variance"] = Number(arm.unit_variance);
    out["variance"] = Number(arm.variance);
    out["se"] = Number(arm.se);
    return out;
  };
  Json out = Json::object();
  out["a"] = arm_json(ratio.a);
  out["b"] = arm_json(ratio.b);
  PutComparison(ratio, &out);
  return out;
}

absl::StatusOr<Json> CupedOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::CupedArmSums a, CupedArm(request, "a"));
  ASSIGN_OR_RETURN(stats::CupedArmSums b, CupedArm(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  ASSIGN_OR_RETURN(stats::Cuped cuped, stats::CupedTest(a, b, alpha));
  auto arm_json = [](const stats::CupedArm& arm) {
    Json out = Json::object();
    out["mean_post"] = Number(arm.mean_post);
    out["mean_pre"] = Number(arm.mean_pre);
    out["adjusted_mean"] = Number(arm.adjusted_mean);
    out["adjusted_variance"] = Number(arm.adjusted_variance);
    out["variance_reduction"] = Number(arm.variance_reduction);
    return out;
  };
  Json out = Json::object();
  out["theta"] = Number(cuped.theta);
  out["pooled_pre_mean"] = Number(cuped.pooled_pre_mean);
  out["a"] = arm_json(cuped.a);
  out["b"] = arm_json(cuped.b);
  PutComparison(cuped, &out);
  return out;
}

absl::StatusOr<Json> CupedRatioOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::CupedRatioArmSums a, CupedRatioArm(request, "a"));
  ASSIGN_OR_RETURN(stats::CupedRatioArmSums b, CupedRatioArm(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  ASSIGN_OR_RETURN(stats::CupedRatio cuped, stats::CupedRatioTest(a, b, alpha));
  auto arm_json = [](const stats::CupedRatioArm& arm) {
    Json out = Json::object();
    out["ratio"] = Number(arm.ratio);
    out["pre_ratio"] = Number(arm.pre_ratio);
    out["adjusted_ratio"] = Number(arm.adjusted_ratio);
    out["unit_variance"] = Number(arm.unit_variance);
    out["adjusted_unit_variance"] = Number(arm.adjusted_unit_variance);
    out["variance"] = Number(arm.variance);
    out["variance_reduction"] = Number(arm.variance_reduction);
    return out;
  };
  Json out = Json::object();
  out["theta"] = Number(cuped.theta);
  out["pooled_pre_ratio"] = Number(cuped.pooled_pre_ratio);
  out["a"] = arm_json(cuped.a);
  out["b"] = arm_json(cuped.b);
  PutComparison(cuped, &out);
  return out;
}

absl::StatusOr<Json> SrmOp(const Json& request) {
  ASSIGN_OR_RETURN(std::vector<double> counts, NumberArray(request, "counts"));
  ASSIGN_OR_RETURN(std::vector<double> weights, NumberArray(request, "weights"));
  ASSIGN_OR_RETURN(stats::Srm srm, stats::SrmTest(counts, weights));
  Json out = Json::object();
  out["chi2"] = Number(srm.chi2);
  out["df"] = srm.df;
  out["p_value"] = Number(srm.p_value);
  out["expected_counts"] = Numbers(srm.expected_counts);
  return out;
}

absl::StatusOr<Json> PAdjustOp(const Json& request) {
  ASSIGN_OR_RETURN(std::vector<double> p_values, NumberArray(request, "p_values"));
  ASSIGN_OR_RETURN(stats::AdjustedPValues adjusted, stats::AdjustPValues(p_values));
  Json out = Json::object();
  out["holm"] = Numbers(adjusted.holm);
  out["bh"] = Numbers(adjusted.bh);
  return out;
}

absl::StatusOr<Json> SequentialTTestOp(const Json& request) {
  ASSIGN_OR_RETURN(stats::ArmMoments a, Moments(request, "a"));
  ASSIGN_OR_RETURN(stats::ArmMoments b, Moments(request, "b"));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  ASSIGN_OR_RETURN(double tuning, NumberFieldOr(request, "sequential_tuning_parameter",
                                                stats::kDefaultSequentialTuning));
  ASSIGN_OR_RETURN(stats::SequentialComparison test,
                   stats::SequentialWelchTest(a, b, alpha, tuning));
  Json out = Json::object();
  out["diff"] = Number(test.diff);
  out["se"] = Number(test.se);
  out["n"] = Number(test.n);
  out["rho"] = Number(test.rho);
  out["ci"] = Range(test.ci);
  out["p_value"] = Number(test.p_value);
  out["relative"] = RelativeJson(test.relative);
  return out;
}

absl::StatusOr<Json> PowerOp(const Json& request) {
  ASSIGN_OR_RETURN(double variance, NumberField(request, "variance", ""));
  ASSIGN_OR_RETURN(double alpha, Alpha(request));
  ASSIGN_OR_RETURN(double power, NumberFieldOr(request, "power", stats::kDefaultPower));
  bool has_n = request.contains("n_per_arm"), has_effect = request.contains("effect");
  if (has_n == has_effect) {
    return absl::InvalidArgumentError("power needs exactly one of n_per_arm and effect");
  }
  Json out = Json::object();
  if (has_n) {
    ASSIGN_OR_RETURN(double n, NumberField(request, "n_per_arm", ""));
    ASSIGN_OR_RETURN(double mde, stats::MinimumDetectableEffect(n, variance, alpha, power));
    out["mde"] = Number(mde);
    return out;
  }
  ASSIGN_OR_RETURN(double effect, NumberField(request, "effect", ""));
  ASSIGN_OR_RETURN(double n, stats::SampleSizePerArm(effect, variance, alpha, power));
  out["n_per_arm"] = Number(n);
  double rounded_up = std::ceil(n);
  // 2^53: past it a double no longer holds every integer.
  out["n_per_arm_rounded_up"] =
      rounded_up < 9007199254740992.0 ? Json(static_cast<int64_t>(rounded_up)) : Json(nullptr);
  return out;
}

struct Op {
  std::string_view name;
  absl::StatusOr<Json> (*handler)(const Json&);
};
constexpr Op kOps[] = {
    {"welchTTest", WelchTTestOp},
    {"relativeLift", RelativeLiftOp},
    {"ratioMetric", RatioMetricOp},
    {"cuped", CupedOp},
    {"cupedRatio", CupedRatioOp},
    {"srm", SrmOp},
    {"pAdjust", PAdjustOp},
    {"sequentialTTest", SequentialTTestOp},
    {"power", PowerOp},
};

}  // namespace

bool IsAnalyzeOp(std::string_view op) {
  for (const Op& known : kOps) {
    if (known.name == op) return true;
  }
  return false;
}

absl::StatusOr<Json> AnalyzeJson(const Json& request) {
  if (!request.is_object()) return absl::InvalidArgumentError("request must be a JSON object");
  auto op = request.find("op");
  if (op == request.end() || !op->is_string()) {
    return absl::InvalidArgumentError("op must be a string");
  }
  const std::string& name = op->get_ref<const std::string&>();
  for (const Op& known : kOps) {
    if (known.name == name) return known.handler(request);
  }
  return absl::InvalidArgumentError("unknown op: " + name);
}

}  // namespace capstan::experiments
