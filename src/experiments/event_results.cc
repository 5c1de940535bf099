#include "experiments/event_results.h"

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "experiments/stats.h"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;

JsonValue OrNull(const std::optional<double>& v) { return v.has_value() ? JsonValue(*v) : nullptr; }

JsonValue OrNull(const std::optional<stats::Interval>& ci) {
  if (!ci.has_value()) return nullptr;
  return JsonValue::array({ci->lower, ci->upper});
}

JsonValue Side(const std::optional<double>& lift, const std::optional<stats::Interval>& ci,
               const std::optional<double>& p_value) {
  return {{"lift", OrNull(lift)}, {"ci", OrNull(ci)}, {"pValue", OrNull(p_value)}};
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
  return {{"theta", test->theta},
          {"absolute", Side(test->diff, test->ci, test->p_value)},
          {"relative", Side(test->relative.lift, test->relative.ci, test->relative.p_value)},
          {"varianceReduction",
           {{"control", OrNull(test->a.variance_reduction)},
            {"variant", OrNull(test->b.variance_reduction)}}}};
}

}  // namespace

absl::StatusOr<JsonValue> ExperimentResults(std::string_view experiment, const ExperimentSums& sums,
                                            const ResultsOptions& options) {
  RETURN_IF_ERROR(stats::ValidateAlpha(options.alpha));
  // Control first, then the others by name.
  std::string control = options.control;
  if (control.empty() && !sums.variants.empty()) {
    control = sums.variants.contains("control") ? "control" : sums.variants.begin()->first;
  }
  if (!control.empty() && !sums.variants.empty() && !sums.variants.contains(control)) {
    return absl::NotFoundError(absl::StrCat("control: variant \"", control,
                                            "\" has no exposures in \"", std::string(experiment),
                                            "\""));
  }
  std::vector<std::string> order;
  if (!control.empty()) order.push_back(control);
  for (const auto& [name, v] : sums.variants) {
    if (name != control) order.push_back(name);
  }

  JsonValue out = {{"experiment", std::string(experiment)},
                   {"control", control.empty() ? JsonValue(nullptr) : JsonValue(control)},
                   {"alpha", options.alpha}};
  std::vector<double> counts;
  std::vector<double> weights;
  JsonValue variants = JsonValue::array();
  for (const std::string& name : order) {
    const VariantSums& v = sums.variants.at(name);
    double weight = 1;
    if (!options.weights.empty()) {
      auto it = options.weights.find(name);
      weight = it == options.weights.end() ? 0 : it->second;
    }
    counts.push_back(static_cast<double>(v.units));
    weights.push_back(weight);
    variants.push_back({{"variant", name}, {"units", v.units}, {"weight", weight}});
  }
  out["variants"] = std::move(variants);

  JsonValue srm = {{"status", "insufficient_data"}, {"chi2", nullptr}, {"pValue", nullptr}};
  if (counts.size() >= 2) {
    absl::StatusOr<stats::Srm> test = stats::SrmTest(counts, weights);
    if (!test.ok()) return test.status();
    if (test->p_value.has_value()) {
      srm = {{"status", stats::SrmAlert(*test) ? "mismatch" : "ok"},
             {"chi2", OrNull(test->chi2)},
             {"pValue", OrNull(test->p_value)}};
    }
  }
  out["srm"] = std::move(srm);

  // Every metric seen in any variant; a variant without it has sums 0.
  std::map<MetricId, int> metric_ids;
  for (const auto& [name, v] : sums.variants) {
    for (const auto& [id, m] : v.metrics) metric_ids[id] = 0;
  }
  auto sums_of = [&](const std::string& variant, const MetricId& id) {
    const VariantSums& v = sums.variants.at(variant);
    auto it = v.metrics.find(id);
    return it == v.metrics.end() ? MetricSums{} : it->second;
  };
  JsonValue metrics = JsonValue::array();
  for (const auto& [id, ignored] : metric_ids) {
    JsonValue rows = JsonValue::array();
    const MetricSums control_sums = sums_of(control, id);
    const double control_n = static_cast<double>(sums.variants.at(control).units);
    for (const std::string& name : order) {
      MetricSums m = sums_of(name, id);
      double n = static_cast<double>(sums.variants.at(name).units);
      JsonValue row = {{"variant", name}, {"n", sums.variants.at(name).units}};
      if (id.kind == EventType::kRatio) {
        row["mean"] = m.den_sum != 0 ? JsonValue(m.sum / m.den_sum) : JsonValue(nullptr);
        row["numeratorSum"] = m.sum;
        row["denominatorSum"] = m.den_sum;
      } else {
        row["mean"] = n > 0 ? JsonValue(m.sum / n) : JsonValue(nullptr);
        row["variance"] = n >= 2 ? JsonValue(stats::SampleVarianceFromSums(n, m.sum, m.sum_squares))
                                 : JsonValue(nullptr);
      }
      if (name != control) {
        if (id.kind == EventType::kRatio) {
          absl::StatusOr<stats::RatioMetric> test = stats::RatioMetricTest(
              {control_n, control_sums.sum, control_sums.sum_squares, control_sums.den_sum,
               control_sums.den_sum_squares, control_sums.products},
              {n, m.sum, m.sum_squares, m.den_sum, m.den_sum_squares, m.products}, options.alpha);
          if (test.ok()) {
            row["comparison"] = {
                {"absolute", Side(test->diff, test->ci, test->p_value)},
                {"relative", Side(test->relative.lift, test->relative.ci, test->relative.p_value)}};
          } else {
            row["comparisonError"] = std::string(test.status().message());
          }
        } else {
          absl::StatusOr<stats::ArmMoments> a =
              stats::ArmFromSums(control_n, control_sums.sum, control_sums.sum_squares, "control");
          absl::StatusOr<stats::ArmMoments> b = stats::ArmFromSums(n, m.sum, m.sum_squares, name);
          if (a.ok() && b.ok()) {
            stats::TTest welch = stats::WelchTTest(*a, *b, options.alpha);
            stats::RelativeLift relative = stats::RelativeLiftTest(*a, *b, options.alpha);
            row["comparison"] = {{"absolute", Side(welch.estimate, welch.ci, welch.p_value)},
                                 {"relative", Side(relative.lift, relative.ci, relative.p_value)}};
            JsonValue cuped = CupedComparison(control_n, control_sums, n, m, options.alpha);
            if (!cuped.is_null()) row["comparison"]["cuped"] = std::move(cuped);
          } else {
            row["comparisonError"] = std::string((a.ok() ? b.status() : a.status()).message());
          }
        }
      }
      rows.push_back(std::move(row));
    }
    metrics.push_back({{"metric", id.name},
                       {"kind", std::string(EventTypeName(id.kind))},
                       {"variants", std::move(rows)}});
  }
  out["metrics"] = std::move(metrics);
  return out;
}

absl::StatusOr<JsonValue> Results(const EventStore& store, std::string_view experiment,
                                  const ResultsOptions& options) {
  return ExperimentResults(experiment, store.Sums(experiment), options);
}

}  // namespace capstan::experiments
