// ExperimentResults on synthetic sufficient statistics: the JSON's numbers
// against scipy/statsmodels answers (computed once with /usr/bin/python3 and
// written here) or against the statistics functions the results call; the
// definition's control, order and weights; Holm and Benjamini-Hochberg over
// the family of every treatment × metric comparison; sequential intervals.
#include "experiments/event_results.h"

#include <cmath>

#include "experiments/sequential.h"
#include "experiments/stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::ordered_json;
using ::testing::HasSubstr;

const MetricId kPurchase{EventType::kConversion, "purchase"};
const MetricId kRevenue{EventType::kValue, "revenue"};
const MetricId kPerSession{EventType::kRatio, "clicks_per_session"};

// `units` exposed units with the given sums of one metric.
void AddMetric(ExperimentSums* sums, const std::string& variant, uint64_t units, const MetricId& id,
               MetricSums m) {
  VariantSums& v = sums->variants[variant];
  v.units = units;
  v.metrics[id] = m;
}

// control and two treatments, 1000 units each; purchase (conversions) and
// revenue (values).
ExperimentSums FourComparisons() {
  ExperimentSums sums;
  AddMetric(&sums, "control", 1000, kPurchase, {.sum = 100, .sum_squares = 100});
  AddMetric(&sums, "t1", 1000, kPurchase, {.sum = 130, .sum_squares = 130});
  AddMetric(&sums, "t2", 1000, kPurchase, {.sum = 112, .sum_squares = 112});
  AddMetric(&sums, "control", 1000, kRevenue, {.sum = 500, .sum_squares = 2000});
  AddMetric(&sums, "t1", 1000, kRevenue, {.sum = 560, .sum_squares = 2300});
  AddMetric(&sums, "t2", 1000, kRevenue, {.sum = 470, .sum_squares = 1900});
  return sums;
}

JsonValue ResultsOf(const ExperimentSums& sums, const ResultsOptions& options) {
  absl::StatusOr<JsonValue> out = ExperimentResults("e", sums, options);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : JsonValue();
}

// The row of `variant` under metric index `metric`.
const JsonValue& Row(const JsonValue& results, size_t metric, const std::string& variant) {
  for (const JsonValue& row : results["metrics"][metric]["variants"]) {
    if (row["variant"] == variant) return row;
  }
  static const JsonValue kMissing;
  ADD_FAILURE() << "no row for " << variant;
  return kMissing;
}

double Number(const JsonValue& v) {
  EXPECT_TRUE(v.is_number()) << v.dump();
  return v.is_number() ? v.get<double>() : std::nan("");
}

// Relative tolerance for numbers computed the same way in another language.
void ExpectNear(double actual, double expected, double relative = 1e-9) {
  EXPECT_NEAR(actual, expected, std::abs(expected) * relative) << "expected " << expected;
}

TEST(EventResultsTest, FixedHorizonWelchMatchesScipy) {
  JsonValue r = ResultsOf(FourComparisons(), {.correction = PValueCorrection::kNone});
  EXPECT_EQ(r["source"], "events");
  EXPECT_EQ(r["control"], "control");
  EXPECT_EQ(r["method"], "fixed");
  EXPECT_TRUE(r["sequentialTuning"].is_null());
  EXPECT_EQ(r["metrics"][0]["metric"], "purchase");
  EXPECT_EQ(r["metrics"][1]["metric"], "revenue");
  const JsonValue& control = Row(r, 0, "control");
  EXPECT_EQ(control["n"], 1000);
  ExpectNear(Number(control["mean"]), 0.1);
  ExpectNear(Number(control["variance"]), (100 - 100.0 * 100 / 1000) / 999);
  EXPECT_FALSE(control.contains("comparison"));
  // scipy: Welch's t-test from these moments.
  const JsonValue& t1 = Row(r, 0, "t1")["comparison"]["absolute"];
  ExpectNear(Number(t1["lift"]), 0.03);
  ExpectNear(Number(t1["pValue"]), 0.03550333505785881);
  ExpectNear(Number(Row(r, 1, "t2")["comparison"]["absolute"]["pValue"]), 0.608671351318631);
  // correction=none: the adjusted p-value is the p-value.
  EXPECT_EQ(t1["pValueAdjusted"], t1["pValue"]);
  EXPECT_EQ(r["comparisons"]["absolute"], 4);
  EXPECT_EQ(r["comparisons"]["relative"], 4);
}

TEST(EventResultsTest, HolmAndBenjaminiHochbergOverEveryTreatmentAndMetric) {
  // statsmodels multipletests(p, method='holm' / 'fdr_bh') on the four
  // absolute p-values (purchase t1, t2; revenue t1, t2).
  JsonValue holm = ResultsOf(FourComparisons(), {});
  EXPECT_EQ(holm["correction"], "holm");  // the default
  auto adjusted = [](const JsonValue& r, size_t metric, const std::string& variant) {
    return Number(Row(r, metric, variant)["comparison"]["absolute"]["pValueAdjusted"]);
  };
  ExpectNear(adjusted(holm, 0, "t1"), 0.14201334023143525);
  ExpectNear(adjusted(holm, 0, "t2"), 0.9800079845881023);
  ExpectNear(adjusted(holm, 1, "t1"), 0.9800079845881023);
  ExpectNear(adjusted(holm, 1, "t2"), 0.9800079845881023);

  JsonValue bh = ResultsOf(FourComparisons(), {.correction = PValueCorrection::kBenjaminiHochberg});
  EXPECT_EQ(bh["correction"], "bh");
  ExpectNear(adjusted(bh, 0, "t1"), 0.14201334023143525);
  ExpectNear(adjusted(bh, 0, "t2"), 0.5115322951713038);
  ExpectNear(adjusted(bh, 1, "t1"), 0.5115322951713038);
  ExpectNear(adjusted(bh, 1, "t2"), 0.608671351318631);

  // The relative lifts are a family of their own, adjusted the same way.
  std::vector<double> relative;
  for (size_t metric : {0, 1}) {
    for (const char* v : {"t1", "t2"}) {
      relative.push_back(Number(Row(holm, metric, v)["comparison"]["relative"]["pValue"]));
    }
  }
  absl::StatusOr<stats::AdjustedPValues> expected = stats::AdjustPValues(relative);
  ASSERT_TRUE(expected.ok());
  size_t i = 0;
  for (size_t metric : {0, 1}) {
    for (const char* v : {"t1", "t2"}) {
      EXPECT_DOUBLE_EQ(Number(Row(holm, metric, v)["comparison"]["relative"]["pValueAdjusted"]),
                       expected->holm[i++]);
    }
  }
}

TEST(EventResultsTest, ComparisonsWithoutAPValueAreNotInTheFamily) {
  // revenue is 0 everywhere: no standard error, so no p-value (null, not NaN)
  // and the family is purchase's two comparisons.
  ExperimentSums sums = FourComparisons();
  for (auto& [name, v] : sums.variants) v.metrics[kRevenue] = {};
  JsonValue r = ResultsOf(sums, {});
  const JsonValue& flat = Row(r, 1, "t1")["comparison"]["absolute"];
  EXPECT_TRUE(flat["pValue"].is_null());
  EXPECT_TRUE(flat["pValueAdjusted"].is_null());
  EXPECT_TRUE(flat["ci"].is_null());
  EXPECT_EQ(r["comparisons"]["absolute"], 2);
  // Holm with m = 2: min(1, 2·p) for the smaller p (0.0355 < 0.3836).
  ExpectNear(Number(Row(r, 0, "t1")["comparison"]["absolute"]["pValueAdjusted"]),
             2 * 0.03550333505785881);
  EXPECT_EQ(r.dump().find("NaN"), std::string::npos);
}

TEST(EventResultsTest, SequentialGivesAlwaysValidIntervals) {
  ExperimentSums sums;
  AddMetric(&sums, "control", 1000, kPurchase, {.sum = 100, .sum_squares = 100});
  AddMetric(&sums, "t1", 1000, kPurchase, {.sum = 130, .sum_squares = 130});
  JsonValue fixed = ResultsOf(sums, {});
  JsonValue sequential = ResultsOf(sums, {.sequential = true});
  EXPECT_EQ(sequential["method"], "sequential");
  EXPECT_EQ(sequential["sequentialTuning"], 5000.0);
  // The confidence sequence of gbstats' SequentialTwoSidedTTest, computed
  // with numpy from its formulas (n = 2000 units, alpha 0.05, N* = 5000).
  const JsonValue& s = Row(sequential, 0, "t1")["comparison"]["absolute"];
  ExpectNear(Number(s["ci"][0]), -0.014540237791478755);
  ExpectNear(Number(s["ci"][1]), 0.07454023779147875);
  ExpectNear(Number(s["pValue"]), 0.37957050462324404);
  // One comparison: Holm changes nothing.
  EXPECT_EQ(s["pValueAdjusted"], s["pValue"]);
  // Wider than the fixed-horizon interval, which excludes 0 here.
  const JsonValue& f = Row(fixed, 0, "t1")["comparison"]["absolute"];
  EXPECT_GT(Number(f["ci"][0]), 0);
  EXPECT_LT(Number(s["ci"][0]), Number(f["ci"][0]));
  // The relative side: the same construction on the delta method's estimate.
  absl::StatusOr<stats::ArmMoments> a = stats::ArmFromSums(1000, 100, 100, "a");
  absl::StatusOr<stats::ArmMoments> b = stats::ArmFromSums(1000, 130, 130, "b");
  absl::StatusOr<stats::SequentialComparison> expected =
      stats::SequentialWelchTest(*a, *b, 0.05, 5000);
  ASSERT_TRUE(expected.ok());
  const JsonValue& rel = Row(sequential, 0, "t1")["comparison"]["relative"];
  EXPECT_DOUBLE_EQ(Number(rel["ci"][0]), expected->relative.ci->lower);
  EXPECT_DOUBLE_EQ(Number(rel["pValue"]), *expected->relative.p_value);
}

TEST(EventResultsTest, SequentialRatioMetricUsesTheDeltaMethodsEstimate) {
  ExperimentSums sums;
  AddMetric(&sums, "control", 500, kPerSession,
            {.sum = 1200,
             .sum_squares = 4000,
             .den_sum = 900,
             .den_sum_squares = 2100,
             .products = 2600});
  AddMetric(&sums, "t1", 520, kPerSession,
            {.sum = 1400,
             .sum_squares = 4800,
             .den_sum = 950,
             .den_sum_squares = 2250,
             .products = 3000});
  JsonValue r = ResultsOf(sums, {.alpha = 0.1, .sequential = true, .sequential_tuning = 800});
  absl::StatusOr<stats::RatioMetric> ratio = stats::RatioMetricTest(
      {500, 1200, 4000, 900, 2100, 2600}, {520, 1400, 4800, 950, 2250, 3000}, 0.1);
  ASSERT_TRUE(ratio.ok());
  stats::SequentialInterval expected =
      stats::SequentialTest(*ratio->diff, *ratio->diff_se, 1020, 0.1, 800);
  const JsonValue& s = Row(r, 0, "t1")["comparison"]["absolute"];
  EXPECT_DOUBLE_EQ(Number(s["lift"]), *ratio->diff);
  EXPECT_DOUBLE_EQ(Number(s["ci"][1]), expected.ci->upper);
  EXPECT_DOUBLE_EQ(Number(s["pValue"]), *expected.p_value);
  ExpectNear(Number(Row(r, 0, "control")["mean"]), 1200.0 / 900);
}

TEST(EventResultsTest, TheDefinitionGivesControlOrderAndSrmWeights) {
  // Defined: "b" (the control, first), "a" and "c", 50/50/0; exposed: 1000 b,
  // 800 a, nothing in c, and 7 units in "typo", a variant the definition lacks.
  ExperimentSums sums;
  AddMetric(&sums, "a", 800, kPurchase, {.sum = 80, .sum_squares = 80});
  AddMetric(&sums, "b", 1000, kPurchase, {.sum = 100, .sum_squares = 100});
  AddMetric(&sums, "typo", 7, kPurchase, {.sum = 1, .sum_squares = 1});
  ExperimentDoc doc;
  doc.id = "e";
  doc.variants = {{.id = "b", .weight = 0.5}, {.id = "a", .weight = 0.5}, {.id = "c", .weight = 0}};
  JsonValue r = ResultsOf(sums, ResultsOptionsFromExperiment(doc));
  EXPECT_EQ(r["source"], "model");
  EXPECT_EQ(r["control"], "b");
  ASSERT_EQ(r["variants"].size(), 4u);
  EXPECT_EQ(r["variants"][0], JsonValue({{"variant", "b"}, {"units", 1000}, {"weight", 0.5}}));
  EXPECT_EQ(r["variants"][1], JsonValue({{"variant", "a"}, {"units", 800}, {"weight", 0.5}}));
  EXPECT_EQ(r["variants"][2], JsonValue({{"variant", "c"}, {"units", 0}, {"weight", 0.0}}));
  EXPECT_EQ(r["variants"][3], JsonValue({{"variant", "typo"}, {"units", 7}, {"weight", 0.0}}));
  // As gbstats' check_srm: the weight-0 arms are out of χ² but their units
  // count in N (1807), so expected is 903.5 each; scipy.stats.chi2.sf(χ², 1).
  EXPECT_EQ(r["srm"]["status"], "mismatch");
  ExpectNear(Number(r["srm"]["chi2"]), 22.163254012174875);
  ExpectNear(Number(r["srm"]["pValue"]), 2.504211424721594e-06, 1e-7);
  // The defined variant never exposed has a row with n = 0 and no comparison.
  const JsonValue& c = Row(r, 0, "c");
  EXPECT_EQ(c["n"], 0);
  EXPECT_TRUE(c["mean"].is_null());
  EXPECT_THAT(c["comparisonError"].get<std::string>(), HasSubstr("c.n must be"));
  EXPECT_TRUE(Row(r, 0, "a").contains("comparison"));

  // The document's analysis settings, and the query's control over them.
  doc.analysis = {.control = "a", .sequential = true, .alpha = 0.1};
  ResultsOptions options = ResultsOptionsFromExperiment(doc);
  r = ResultsOf(sums, options);
  EXPECT_EQ(r["control"], "a");
  EXPECT_EQ(r["variants"][1]["variant"], "b");
  EXPECT_EQ(r["method"], "sequential");
  EXPECT_EQ(r["alpha"], 0.1);
  options.control = "b";
  options.weights = {{"a", 4}, {"b", 5}};  // 800:1000 is 4:5
  r = ResultsOf(sums, options);
  EXPECT_EQ(r["control"], "b");
  EXPECT_EQ(r["variants"][1]["weight"], 4.0);
  EXPECT_EQ(r["srm"]["status"], "ok");
  ExpectNear(Number(r["srm"]["chi2"]), 0.027116768123962368, 1e-8);
}

TEST(EventResultsTest, WithoutADefinitionControlIsNamedControlOrTheFirstByName) {
  ExperimentSums sums;
  AddMetric(&sums, "zeta", 10, kPurchase, {.sum = 1, .sum_squares = 1});
  AddMetric(&sums, "alpha", 10, kPurchase, {.sum = 2, .sum_squares = 2});
  EXPECT_EQ(ResultsOf(sums, {})["control"], "alpha");
  AddMetric(&sums, "control", 10, kPurchase, {.sum = 2, .sum_squares = 2});
  JsonValue r = ResultsOf(sums, {});
  EXPECT_EQ(r["control"], "control");
  EXPECT_EQ(r["variants"][1]["weight"], 1.0);
  EXPECT_EQ(r["srm"]["status"], "ok");

  JsonValue none = ResultsOf(ExperimentSums{}, {});
  EXPECT_TRUE(none["control"].is_null());
  EXPECT_EQ(none["srm"]["status"], "insufficient_data");
  EXPECT_EQ(none["metrics"].size(), 0u);
}

TEST(EventResultsTest, BadOptionsNameTheField) {
  ExperimentSums sums = FourComparisons();
  auto error = [&](const ResultsOptions& options) {
    absl::StatusOr<JsonValue> out = ExperimentResults("e", sums, options);
    EXPECT_TRUE(absl::IsInvalidArgument(out.status())) << out.status();
    return std::string(out.status().message());
  };
  EXPECT_THAT(error({.control = "nope"}),
              HasSubstr("control: \"nope\" is not a variant of \"e\" (variants: control, t1, t2)"));
  EXPECT_THAT(error({.alpha = 1}), HasSubstr("alpha: must be a number in (0, 1)"));
  EXPECT_THAT(error({.sequential = true, .sequential_tuning = 0}),
              HasSubstr("sequentialTuning: must be a finite number > 0"));
  EXPECT_THAT(error({.weights = {{"x", 1}}}), HasSubstr("weights:"));
}

}  // namespace
}  // namespace capstan::experiments
