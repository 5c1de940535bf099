#include "experiments/event_results.h"

#include <cmath>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "experiments/sequential.h"
#include "experiments/stats.h"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;

JsonValue OrNull(const std::optional<double>& v) { return v.has_value() ? JsonValue(*v) : nullptr; }

JsonValue OrNull(const std::optional<stats::Interval>& ci) {
  if (!ci.has_value()) return nullptr;
  return JsonValue::array({ci->lower, ci->upper});
}

// One side (absolute or relative) of a treatment's comparison with control.
struct Side {
  std::optional<double> lift;
  std::optional<stats::Interval> ci;
  std::optional<double> p_value;
  std::optional<double> p_value_adjusted;  // filled in once the family is known

  JsonValue ToJson() const {
    return {{"lift", OrNull(lift)},
            {"ci", OrNull(ci)},
            {"pValue", OrNull(p_value)},
            {"pValueAdjusted", OrNull(p_value_adjusted)}};
  }
};

struct Comparison {
  Side absolute;
  Side relative;
};

// Welch's t-test (absolute) and the delta method (relative) on per-unit
// values, fixed-horizon or sequential.
absl::StatusOr<Comparison> CompareMeans(double control_n, const MetricSums& control, double n,
                                        const MetricSums& treatment, const std::string& name,
                                        const ResultsOptions& options) {
  ASSIGN_OR_RETURN(stats::ArmMoments a,
                   stats::ArmFromSums(control_n, control.sum, control.sum_squares, "control"));
  ASSIGN_OR_RETURN(stats::ArmMoments b,
                   stats::ArmFromSums(n, treatment.sum, treatment.sum_squares, name));
  if (options.sequential) {
    ASSIGN_OR_RETURN(stats::SequentialComparison s,
                     stats::SequentialWelchTest(a, b, options.alpha, options.sequential_tuning));
    return Comparison{{s.diff, s.ci, s.p_value, {}},
                      {s.relative.lift, s.relative.ci, s.relative.p_value, {}}};
  }
  stats::TTest welch = stats::WelchTTest(a, b, options.alpha);
  stats::RelativeLift relative = stats::RelativeLiftTest(a, b, options.alpha);
  return Comparison{{welch.estimate, welch.ci, welch.p_value, {}},
                    {relative.lift, relative.ci, relative.p_value, {}}};
}

// A CUPED result (stats::Cuped or stats::CupedRatio) as the results JSON:
// theta, absolute and relative lift with CI and p-value, and each arm's
// variance reduction. Not in a correction family: no pValueAdjusted.
template <typename CupedResult>
JsonValue CupedJson(const CupedResult& test) {
  auto side = [](const std::optional<double>& lift, const std::optional<stats::Interval>& ci,
                 const std::optional<double>& p_value) -> JsonValue {
    return {{"lift", OrNull(lift)}, {"ci", OrNull(ci)}, {"pValue", OrNull(p_value)}};
  };
  return {{"theta", test.theta},
          {"absolute", side(test.diff, test.ci, test.p_value)},
          {"relative", side(test.relative.lift, test.relative.ci, test.relative.p_value)},
          {"varianceReduction",
           {{"control", OrNull(test.a.variance_reduction)},
            {"variant", OrNull(test.b.variance_reduction)}}}};
}

// CUPED for a conversion or value metric (treatment `m` against control
// `c`), with the pre-exposure covariate the aggregation keeps
// (event_store.h); null when no unit has a covariate (CUPED would change
// nothing), an "error" when the test cannot be made (n < 2, ...).
JsonValue CupedComparison(double control_n, const MetricSums& c, double n, const MetricSums& m,
                          double alpha) {
  if (c.covariate_sum_squares == 0 && m.covariate_sum_squares == 0) return nullptr;
  absl::StatusOr<stats::Cuped> test = stats::CupedTest(
      {control_n, c.sum, c.sum_squares, c.covariate_sum, c.covariate_sum_squares,
       c.covariate_products},
      {n, m.sum, m.sum_squares, m.covariate_sum, m.covariate_sum_squares, m.covariate_products},
      alpha);
  if (!test.ok()) return {{"error", std::string(test.status().message())}};
  return CupedJson(*test);
}

// CUPED for a ratio metric (GrowthBook's regression-adjusted ratio,
// stats.h CupedRatioTest) with each unit's pre-period numerator and
// denominator sums; null when no unit has a pre-period, an "error" when the
// test cannot be made. The same JSON as CupedComparison.
JsonValue CupedRatioComparison(double control_n, const MetricSums& c, double n, const MetricSums& m,
                               double alpha) {
  auto no_covariate = [](const MetricSums& s) {
    return s.covariate_sum_squares == 0 && s.covariate_den_sum_squares == 0;
  };
  if (no_covariate(c) && no_covariate(m)) return nullptr;
  auto arm = [](double units, const MetricSums& s) {
    stats::CupedRatioArmSums arm;
    arm.n = units;
    arm.post = {units, s.sum, s.sum_squares, s.den_sum, s.den_sum_squares, s.products};
    arm.pre = {units,
               s.covariate_sum,
               s.covariate_sum_squares,
               s.covariate_den_sum,
               s.covariate_den_sum_squares,
               s.covariate_num_den_products};
    arm.numerator_pre_numerator = s.covariate_products;
    arm.numerator_pre_denominator = s.covariate_den_products;
    arm.denominator_pre_numerator = s.den_covariate_products;
    arm.denominator_pre_denominator = s.den_covariate_den_products;
    return arm;
  };
  absl::StatusOr<stats::CupedRatio> test =
      stats::CupedRatioTest(arm(control_n, c), arm(n, m), alpha);
  if (!test.ok()) return {{"error", std::string(test.status().message())}};
  return CupedJson(*test);
}

// The delta method on Σnum/Σden; sequential intervals come from the same
// estimates and standard errors, as gbstats builds them for any test.
absl::StatusOr<Comparison> CompareRatios(double control_n, const MetricSums& control, double n,
                                         const MetricSums& treatment,
                                         const ResultsOptions& options) {
  ASSIGN_OR_RETURN(
      stats::RatioMetric test,
      stats::RatioMetricTest({control_n, control.sum, control.sum_squares, control.den_sum,
                              control.den_sum_squares, control.products},
                             {n, treatment.sum, treatment.sum_squares, treatment.den_sum,
                              treatment.den_sum_squares, treatment.products},
                             options.alpha));
  Comparison out{{test.diff, test.ci, test.p_value, {}},
                 {test.relative.lift, test.relative.ci, test.relative.p_value, {}}};
  if (options.sequential) {
    const double n_total = control_n + n;
    out.absolute.ci.reset();
    out.absolute.p_value.reset();
    out.relative.ci.reset();
    out.relative.p_value.reset();
    if (test.diff.has_value() && test.diff_se.has_value()) {
      stats::SequentialInterval s = stats::SequentialTest(*test.diff, *test.diff_se, n_total,
                                                          options.alpha, options.sequential_tuning);
      out.absolute.ci = s.ci;
      out.absolute.p_value = s.p_value;
    }
    if (test.relative.lift.has_value() && test.relative.se.has_value()) {
      stats::SequentialInterval s =
          stats::SequentialTest(*test.relative.lift, *test.relative.se, n_total, options.alpha,
                                options.sequential_tuning);
      out.relative.ci = s.ci;
      out.relative.p_value = s.p_value;
    }
  }
  return out;
}

// Sets p_value_adjusted on every side in `family` that has a p-value; sides
// without one are not comparisons and do not count in m.
absl::Status AdjustFamily(const std::vector<Side*>& family, PValueCorrection correction) {
  std::vector<Side*> tested;
  std::vector<double> p_values;
  for (Side* side : family) {
    if (!side->p_value.has_value()) continue;
    tested.push_back(side);
    p_values.push_back(*side->p_value);
  }
  ASSIGN_OR_RETURN(stats::AdjustedPValues adjusted, stats::AdjustPValues(p_values));
  for (size_t i = 0; i < tested.size(); ++i) {
    switch (correction) {
      case PValueCorrection::kHolm:
        tested[i]->p_value_adjusted = adjusted.holm[i];
        break;
      case PValueCorrection::kBenjaminiHochberg:
        tested[i]->p_value_adjusted = adjusted.bh[i];
        break;
      case PValueCorrection::kNone:
        tested[i]->p_value_adjusted = p_values[i];
        break;
    }
  }
  return absl::OkStatus();
}

// m: the comparisons of a family that have a p-value.
size_t FamilySize(const std::vector<Side*>& family) {
  size_t m = 0;
  for (const Side* side : family) m += side->p_value.has_value() ? 1 : 0;
  return m;
}

struct Row {
  std::string variant;
  uint64_t units = 0;
  JsonValue summary;  // mean, variance or the ratio's sums
  std::optional<Comparison> comparison;
  JsonValue cuped;  // null: none (no covariate, sequential)
  std::string comparison_error;
};

}  // namespace

ResultsOptions ResultsOptionsFromExperiment(const ExperimentDoc& experiment) {
  ResultsOptions options;
  for (const VariantDoc& variant : experiment.variants) {
    options.planned.push_back({variant.id, variant.weight});
  }
  options.control = experiment.analysis.control;
  if (options.control.empty() && !experiment.variants.empty()) {
    options.control = experiment.variants.front().id;
  }
  options.alpha = experiment.analysis.alpha;
  options.correction = experiment.analysis.correction;
  options.sequential = experiment.analysis.sequential;
  options.sequential_tuning = experiment.analysis.sequential_tuning;
  return options;
}

absl::StatusOr<JsonValue> ExperimentResults(std::string_view experiment, const ExperimentSums& sums,
                                            const ResultsOptions& options) {
  if (!stats::ValidateAlpha(options.alpha).ok()) {
    return absl::InvalidArgumentError("alpha: must be a number in (0, 1)");
  }
  if (!std::isfinite(options.sequential_tuning) || !(options.sequential_tuning > 0)) {
    return absl::InvalidArgumentError("sequentialTuning: must be a finite number > 0");
  }
  const bool from_model = !options.planned.empty();
  auto planned = [&](const std::string& name) {
    for (const PlannedVariant& v : options.planned) {
      if (v.id == name) return true;
    }
    return false;
  };

  std::string control = options.control;
  if (control.empty()) {
    if (from_model) {
      control = options.planned.front().id;
    } else if (!sums.variants.empty()) {
      control = sums.variants.contains("control") ? "control" : sums.variants.begin()->first;
    }
  }
  if (!control.empty() && !planned(control) && !sums.variants.contains(control) &&
      (from_model || !sums.variants.empty())) {
    std::vector<std::string> known;
    for (const PlannedVariant& v : options.planned) known.push_back(v.id);
    for (const auto& [name, v] : sums.variants) {
      if (!planned(name)) known.push_back(name);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("control: \"", control, "\" is not a variant of \"", std::string(experiment),
                     "\" (variants: ", absl::StrJoin(known, ", "), ")"));
  }

  // Control first, then the planned variants in their order, then variants
  // seen in events but not defined, by name.
  std::vector<std::string> order;
  if (!control.empty()) order.push_back(control);
  for (const PlannedVariant& v : options.planned) {
    if (v.id != control) order.push_back(v.id);
  }
  for (const auto& [name, v] : sums.variants) {
    if (name != control && !planned(name)) order.push_back(name);
  }
  static const VariantSums kNoExposures;
  auto variant_sums = [&](const std::string& name) -> const VariantSums& {
    auto it = sums.variants.find(name);
    return it == sums.variants.end() ? kNoExposures : it->second;
  };

  JsonValue out = {{"experiment", std::string(experiment)},
                   {"source", from_model ? "model" : "events"},
                   {"control", control.empty() ? JsonValue(nullptr) : JsonValue(control)},
                   {"alpha", options.alpha},
                   {"method", options.sequential ? "sequential" : "fixed"},
                   {"sequentialTuning",
                    options.sequential ? JsonValue(options.sequential_tuning) : JsonValue(nullptr)},
                   {"correction", std::string(PValueCorrectionName(options.correction))}};

  std::vector<double> counts;
  std::vector<double> weights;
  JsonValue variants = JsonValue::array();
  for (const std::string& name : order) {
    double weight = 1;
    if (!options.weights.empty()) {
      auto it = options.weights.find(name);
      weight = it == options.weights.end() ? 0 : it->second;
    } else if (from_model) {
      weight = 0;  // exposed but not defined: not in the plan
      for (const PlannedVariant& v : options.planned) {
        if (v.id == name) weight = v.weight;
      }
    }
    const uint64_t units = variant_sums(name).units;
    counts.push_back(static_cast<double>(units));
    weights.push_back(weight);
    variants.push_back({{"variant", name}, {"units", units}, {"weight", weight}});
  }

  JsonValue srm = {{"status", "insufficient_data"}, {"chi2", nullptr}, {"pValue", nullptr}};
  if (counts.size() >= 2) {
    absl::StatusOr<stats::Srm> test = stats::SrmTest(counts, weights);
    if (!test.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights: ", test.status().message(), " (need a positive sum)"));
    }
    if (test->p_value.has_value()) {
      srm = {{"status", stats::SrmAlert(*test) ? "mismatch" : "ok"},
             {"chi2", OrNull(test->chi2)},
             {"pValue", OrNull(test->p_value)}};
    }
  }

  // Every metric seen in any variant; a variant without it has sums 0.
  std::map<MetricId, std::vector<Row>> metrics;
  for (const auto& [name, v] : sums.variants) {
    for (const auto& [id, m] : v.metrics) metrics[id];
  }
  auto sums_of = [&](const std::string& variant, const MetricId& id) {
    const VariantSums& v = variant_sums(variant);
    auto it = v.metrics.find(id);
    return it == v.metrics.end() ? MetricSums{} : it->second;
  };
  std::vector<Side*> absolute_family;
  std::vector<Side*> relative_family;
  for (auto& [id, rows] : metrics) {
    rows.reserve(order.size());  // the families point into rows
    const MetricSums control_sums = sums_of(control, id);
    const double control_n = static_cast<double>(variant_sums(control).units);
    for (const std::string& name : order) {
      Row row;
      row.variant = name;
      row.units = variant_sums(name).units;
      const double n = static_cast<double>(row.units);
      const MetricSums m = sums_of(name, id);
      if (id.kind == EventType::kRatio) {
        row.summary = {{"mean", m.den_sum != 0 ? JsonValue(m.sum / m.den_sum) : JsonValue(nullptr)},
                       {"numeratorSum", m.sum},
                       {"denominatorSum", m.den_sum}};
      } else {
        row.summary = {
            {"mean", n > 0 ? JsonValue(m.sum / n) : JsonValue(nullptr)},
            {"variance", n >= 2 ? JsonValue(stats::SampleVarianceFromSums(n, m.sum, m.sum_squares))
                                : JsonValue(nullptr)}};
      }
      if (name != control) {
        absl::StatusOr<Comparison> comparison =
            id.kind == EventType::kRatio
                ? CompareRatios(control_n, control_sums, n, m, options)
                : CompareMeans(control_n, control_sums, n, m, name, options);
        if (comparison.ok()) {
          row.comparison = *comparison;
          // CUPED is a fixed-horizon adjustment: not mixed into a
          // sequential analysis's always-valid intervals.
          if (!options.sequential) {
            row.cuped = id.kind == EventType::kRatio
                            ? CupedRatioComparison(control_n, control_sums, n, m, options.alpha)
                            : CupedComparison(control_n, control_sums, n, m, options.alpha);
          }
        } else {
          row.comparison_error = std::string(comparison.status().message());
        }
      }
      rows.push_back(std::move(row));
      if (rows.back().comparison.has_value()) {
        absolute_family.push_back(&rows.back().comparison->absolute);
        relative_family.push_back(&rows.back().comparison->relative);
      }
    }
  }
  RETURN_IF_ERROR(AdjustFamily(absolute_family, options.correction));
  RETURN_IF_ERROR(AdjustFamily(relative_family, options.correction));
  out["comparisons"] = {{"absolute", FamilySize(absolute_family)},
                        {"relative", FamilySize(relative_family)}};
  out["variants"] = std::move(variants);
  out["srm"] = std::move(srm);

  JsonValue metrics_json = JsonValue::array();
  for (const auto& [id, rows] : metrics) {
    JsonValue rows_json = JsonValue::array();
    for (const Row& row : rows) {
      JsonValue r = {{"variant", row.variant}, {"n", row.units}};
      r.update(row.summary);
      if (row.comparison.has_value()) {
        r["comparison"] = {{"absolute", row.comparison->absolute.ToJson()},
                           {"relative", row.comparison->relative.ToJson()}};
        if (!row.cuped.is_null()) r["comparison"]["cuped"] = row.cuped;
      } else if (!row.comparison_error.empty()) {
        r["comparisonError"] = row.comparison_error;
      }
      rows_json.push_back(std::move(r));
    }
    metrics_json.push_back({{"metric", id.name},
                            {"kind", std::string(EventTypeName(id.kind))},
                            {"variants", std::move(rows_json)}});
  }
  out["metrics"] = std::move(metrics_json);
  return out;
}

absl::StatusOr<JsonValue> Results(const EventStore& store, std::string_view experiment,
                                  const ResultsOptions& options) {
  return ExperimentResults(experiment, store.Sums(experiment), options);
}

}  // namespace capstan::experiments
