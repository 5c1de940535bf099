// The results of an experiment from the event aggregation's sufficient
// statistics (event_store.h), computed by the statistics engine (stats.h):
// per metric and variant n, mean and variance; per treatment variant against
// control the absolute lift (Welch's t-test, or the delta method for ratio
// metrics) and the relative lift, each with its confidence interval and
// p-value; and the sample-ratio-mismatch check over exposed units.
//
// The JSON (GET /v1/experiments/{id}/results; docs/experiments-events.md):
//   {"experiment", "control", "alpha",
//    "variants": [{"variant", "units", "weight"}],
//    "srm": {"status": "ok"|"mismatch"|"insufficient_data", "chi2", "pValue"},
//    "metrics": [{"metric", "kind", "variants": [
//        {"variant", "n", "mean", "variance"?,          ("mean" is Σnum/Σden for ratios)
//         "comparison"?: {"absolute": {"lift", "ci": [lo, hi], "pValue"},
//                         "relative": {"lift", "ci", "pValue"},
//                         "cuped"?: {"theta", "absolute", "relative",      (conversion and value
//                                    "varianceReduction": {"control", "variant"}}  metrics with a
//                                   | {"error"}}                          pre-period covariate)
//         | "comparisonError": "why not (n < 2, ...)"}]}]}
// Numbers that are undefined (a zero standard error, a zero control mean)
// are null.
//
// Thread-safety: pure.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "experiments/event_store.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments {

struct ResultsOptions {
  // The control variant; empty: "control" if present, else the first by name.
  std::string control;
  // Planned traffic weights for SRM; missing variants weigh 0 unless the map
  // is empty (then every observed variant weighs 1).
  std::map<std::string, double> weights;
  double alpha = 0.05;
};

absl::StatusOr<nlohmann::ordered_json> ExperimentResults(std::string_view experiment,
                                                         const ExperimentSums& sums,
                                                         const ResultsOptions& options);

// The experiment's results as of the store's last commit.
absl::StatusOr<nlohmann::ordered_json> Results(const EventStore& store, std::string_view experiment,
                                               const ResultsOptions& options = {});

}  // namespace capstan::experiments
