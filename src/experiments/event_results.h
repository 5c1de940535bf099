// The results of an experiment from the event aggregation's sufficient
// statistics (event_store.h), computed by the statistics engine (stats.h,
// sequential.h): per metric and variant n, mean and variance; per treatment
// variant against control the absolute lift (Welch's t-test, or the delta
// method for ratio metrics) and the relative lift, each with its confidence
// interval, p-value and multiple-testing-adjusted p-value; and the
// sample-ratio-mismatch check over exposed units.
//
// What the experiment is comes from its definition in the layered model when
// there is one (ResultsOptionsFromExperiment: the variants in order with their
// planned weights, control = the first variant, the `analysis` settings);
// an experiment known only from its events is analysed over the variants seen.
//
// The JSON (GET /v1/experiments/{id}/results; docs/experiments-events.md
// documents every field):
//   {"experiment", "source": "model"|"events", "control", "alpha",
//    "method": "fixed"|"sequential", "sequentialTuning": N*|null,
//    "correction": "holm"|"bh"|"none",
//    "comparisons": {"absolute": m, "relative": m},      (the size of each family)
//    "variants": [{"variant", "units", "weight"}],
//    "srm": {"status": "ok"|"mismatch"|"insufficient_data", "chi2", "pValue"},
//    "metrics": [{"metric", "kind", "variants": [
//        {"variant", "n", "mean", "variance"?,          ("mean" is Σnum/Σden for ratios)
//         "comparison"?: {"absolute": {"lift", "ci": [lo, hi], "pValue", "pValueAdjusted"},
//                         "relative": {"lift", "ci", "pValue", "pValueAdjusted"},
//                         "cuped"?: {"theta", "absolute", "relative",      (metrics with a
//                                    "varianceReduction": {"control", "variant"}}  pre-period
//                                   | {"error"}}                          covariate, fixed-horizon
//                                                                         only; for ratios the
//                                                                         regression-adjusted
//                                                                         ratio)
//         | "comparisonError": "why not (n < 2, ...)"}]}]}
// Numbers that are undefined (a zero standard error, a zero control mean)
// are null, never NaN.
//
// Thread-safety: pure.
//
// Example:
//   ResultsOptions options = ResultsOptionsFromExperiment(experiment_doc);
//   options.correction = PValueCorrection::kBenjaminiHochberg;  // a query override
//   absl::StatusOr<nlohmann::ordered_json> json = Results(store, "checkout", options);
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "experiments/event_store.h"
#include "experiments/model.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments {

// A variant of the experiment's definition and its planned share of traffic.
struct PlannedVariant {
  std::string id;
  double weight = 0;
};

struct ResultsOptions {
  // The variants as defined in the layered model, in order; empty when the
  // experiment is known only from its events.
  std::vector<PlannedVariant> planned;
  // The control variant; empty: the first planned variant, else "control" if
  // it has exposures, else the first exposed variant by name.
  std::string control;
  // Traffic weights for SRM, overriding the planned ones; a variant missing
  // from a non-empty map weighs 0. Empty and nothing planned: every variant
  // seen weighs 1.
  std::map<std::string, double> weights;
  double alpha = 0.05;
  // Across every treatment × metric comparison of the experiment (absolute
  // and relative lifts are separate families of the same size).
  PValueCorrection correction = PValueCorrection::kHolm;
  // Always-valid intervals and p-values (sequential.h) instead of
  // fixed-horizon ones, tuned for `sequential_tuning` total units.
  bool sequential = false;
  double sequential_tuning = 5000;
};

// The options an experiment's definition implies: its variants and weights,
// its control (analysis.control, else the first variant) and its analysis
// settings.
ResultsOptions ResultsOptionsFromExperiment(const ExperimentDoc& experiment);

// InvalidArgument naming the option (alpha, sequentialTuning, control,
// weights) when the options cannot be used.
absl::StatusOr<nlohmann::ordered_json> ExperimentResults(std::string_view experiment,
                                                         const ExperimentSums& sums,
                                                         const ResultsOptions& options);

// The experiment's results as of the store's last commit.
absl::StatusOr<nlohmann::ordered_json> Results(const EventStore& store, std::string_view experiment,
                                               const ResultsOptions& options = {});

}  // namespace capstan::experiments
