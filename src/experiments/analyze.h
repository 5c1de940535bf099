// The statistics engine's JSON interface: one request object in, one answer
// object out, as section 6 ("Statistics ops") of the shared
// experiments-eval-protocol.md specifies. `capstan experiments eval` answers
// these ops through it, and so will the experiment service's
// `POST /v1/analyze`.
//
// Ops (field names exactly as the protocol's):
//   welchTTest    a, b: {n, mean, variance} or {n, sum, sum_squares}; alpha
//   relativeLift  as welchTTest
//   ratioMetric   a, b: {n, numerator: {sum, sum_squares}, denominator: {...},
//                 sum_of_products}; alpha
//   cuped         a, b: {n, post: {sum, sum_squares}, pre: {...},
//                 post_pre_sum_of_products}; alpha
//   cupedRatio    a, b: ratioMetric's arm plus "pre": {numerator: {sum,
//                 sum_squares}, denominator: {...}, sum_of_products} and
//                 "post_pre_sum_of_products": {numerator_numerator,
//                 numerator_denominator, denominator_numerator,
//                 denominator_denominator} (Σ post × pre); alpha
//                 -> {theta, pooled_pre_ratio, a: {ratio, pre_ratio,
//                 adjusted_ratio, unit_variance, adjusted_unit_variance,
//                 variance, variance_reduction}, b, diff, diff_se, df, t,
//                 p_value, ci, relative} (stats.h CupedRatioTest; CUPED for
//                 ratio metrics, as GrowthBook's regression-adjusted ratios)
//   srm           counts (int[]), weights (number[], any scale)
//   pAdjust       p_values (number[])
// and two of Capstan's own, outside the protocol's table:
//   sequentialTTest  as welchTTest, plus sequential_tuning_parameter (N*,
//                    default 5000) -> {diff, se, n, rho, ci, p_value,
//                    relative: {lift, se, ci, p_value}} (sequential.h)
//   power            variance, alpha, power (default 0.8), and either
//                    n_per_arm -> {mde} or effect -> {n_per_arm,
//                    n_per_arm_rounded_up} (power.h)
//
// An undefined number is null, never NaN. A request that cannot be analysed is
// an InvalidArgument Status whose message names the field ("a.n must be a
// finite number >= 2"); nothing throws.
//
// Thread-safety: reentrant (no shared state).
//
// Example:
//   AnalyzeJson(Json::parse(R"({"op":"srm","counts":[510,490],"weights":[1,1]})"))
//   // -> {"chi2":0.4,"df":1,"p_value":0.527...,"expected_counts":[500,500]}
#ifndef CAPSTAN_EXPERIMENTS_ANALYZE_H_
#define CAPSTAN_EXPERIMENTS_ANALYZE_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

// Whether `op` is one AnalyzeJson answers.
bool IsAnalyzeOp(std::string_view op);

// Answers one statistics request (an object with "op"). Unknown fields are
// ignored ("seq" among them).
absl::StatusOr<Json> AnalyzeJson(const Json& request);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_ANALYZE_H_
