// CUPED for ratio metrics through the event store: pre-period ratio events
// (numerator and denominator in the lookback before the exposure) become
// each unit's covariate; the results' regression-adjusted ratio equals a
// computation from the per-unit values written independently of stats.cc
// (each ratio linearised per unit); the sums survive a reopen (unit states
// with their pre-period entries read back from the checkpoint) and an
// aggregate record from before CUPED for ratios reads as "no covariate".
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "experiments/event_results.h"
#include "experiments/event_store.h"
#include "experiments/event_store_test_util.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using event_store_testing::TempDirectory;

constexpr int64_t kDayMs = 24 * 3600 * 1000;
constexpr int64_t kExposureMs = 100 * kDayMs;

Event Exposure(const std::string& unit, const std::string& variant) {
  return Event{.type = EventType::kExposure,
               .key = "x-" + unit,
               .experiment = "e",
               .unit = unit,
               .variant = variant,
               .timestamp_ms = kExposureMs};
}

Event Ratio(const std::string& key, const std::string& unit, double numerator, double denominator,
            int64_t ts) {
  return Event{.type = EventType::kRatio,
               .key = key,
               .experiment = "e",
               .unit = unit,
               .metric = "ctr",
               .value = numerator,
               .denominator = denominator,
               .timestamp_ms = ts};
}

// One unit's totals: post-period (m, d) and pre-period (m0, d0).
struct UnitValues {
  double m = 0, d = 0, m0 = 0, d0 = 0;
};

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// Two-pass sample covariance.
double Cov(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = Mean(a), mb = Mean(b), s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - ma) * (b[i] - mb);
  return s / static_cast<double>(a.size() - 1);
}

// An arm's ratios and the per-unit influence of each: R = mean(M)/mean(D)
// moves by (M_i − R·D_i)/mean(D) per unit, so the delta method's variance
// of R is the sample variance of that (and likewise for R0).
struct Linearised {
  double ratio = 0, pre_ratio = 0;
  std::vector<double> influence, pre_influence;
};

Linearised Linearise(const std::vector<UnitValues>& units) {
  std::vector<double> m, d, m0, d0;
  for (const UnitValues& u : units) {
    m.push_back(u.m), d.push_back(u.d), m0.push_back(u.m0), d0.push_back(u.d0);
  }
  Linearised out;
  out.ratio = Mean(m) / Mean(d);
  out.pre_ratio = Mean(m0) / Mean(d0);
  for (size_t i = 0; i < units.size(); ++i) {
    out.influence.push_back((m[i] - out.ratio * d[i]) / Mean(d));
    out.pre_influence.push_back((m0[i] - out.pre_ratio * d0[i]) / Mean(d0));
  }
  return out;
}

// 3000 units, each with a click propensity that persists from the
// pre-period (a day before the exposure, sent before the exposure so it is
// held and classified when the exposure comes) into the outcome; noise
// events older than the lookback must not count. Treatment lifts clicks 10%.
std::vector<Event> Stream(std::map<std::string, std::vector<UnitValues>>* arms) {
  std::mt19937 rng(17);
  std::normal_distribution<double> propensity_dist(0.3, 0.12);
  std::poisson_distribution<int> sessions_dist(4);
  std::vector<Event> events;
  for (int i = 0; i < 3000; ++i) {
    const std::string unit = "u" + std::to_string(i);
    const std::string variant = i % 2 == 0 ? "control" : "b";
    const double propensity = std::clamp(propensity_dist(rng), 0.02, 0.9);
    auto clicks = [&](double sessions, double p) {
      std::binomial_distribution<int> dist(static_cast<int>(sessions), std::min(p, 1.0));
      return static_cast<double>(dist(rng));
    };
    UnitValues u;
    u.d0 = 1 + sessions_dist(rng);
    u.m0 = clicks(u.d0, propensity);
    u.d = 1 + sessions_dist(rng);
    u.m = clicks(u.d, propensity * (variant == "b" ? 1.1 : 1.0));
    // The pre-period in two events, to exercise the covariate's update.
    const double first_sessions = std::floor(u.d0 / 2);
    const double first_clicks = std::min(u.m0, first_sessions);
    events.push_back(
        Ratio("pre1-" + unit, unit, first_clicks, first_sessions, kExposureMs - 2 * kDayMs));
    events.push_back(Ratio("old-" + unit, unit, 50, 60, kExposureMs - 20 * kDayMs));
    events.push_back(Exposure(unit, variant));
    events.push_back(Ratio("post-" + unit, unit, u.m, u.d, kExposureMs + 3600000));
    // Sent after the exposure, stamped before it: still the covariate.
    events.push_back(Ratio("pre2-" + unit, unit, u.m0 - first_clicks, u.d0 - first_sessions,
                           kExposureMs - kDayMs));
    (*arms)[variant].push_back(u);
  }
  return events;
}

void ExpectMatchesIndependentComputation(const nlohmann::ordered_json& results,
                                         std::map<std::string, std::vector<UnitValues>>& arms) {
  const nlohmann::ordered_json& metric = results["metrics"][0];
  ASSERT_EQ(metric["kind"], "ratio");
  const nlohmann::ordered_json& row = metric["variants"][1];
  ASSERT_EQ(row["variant"], "b");
  ASSERT_TRUE(row["comparison"].contains("cuped")) << row.dump();
  const nlohmann::ordered_json& cuped = row["comparison"]["cuped"];

  Linearised control = Linearise(arms["control"]), treatment = Linearise(arms["b"]);
  // θ as gbstats: the summed delta-method cov(R, R0) over the summed var(R0).
  const double theta = (Cov(control.influence, control.pre_influence) +
                        Cov(treatment.influence, treatment.pre_influence)) /
                       (Cov(control.pre_influence, control.pre_influence) +
                        Cov(treatment.pre_influence, treatment.pre_influence));
  EXPECT_GT(theta, 0.1);
  EXPECT_NEAR(cuped["theta"].get<double>(), theta, 1e-9 * std::fabs(theta));
  std::map<std::string, double> adjusted_variance;
  for (auto [name, arm] : {std::pair{"control", &control}, std::pair{"b", &treatment}}) {
    std::vector<double> adjusted;
    for (size_t i = 0; i < arm->influence.size(); ++i) {
      adjusted.push_back(arm->influence[i] - theta * arm->pre_influence[i]);
    }
    adjusted_variance[name] = Cov(adjusted, adjusted) / static_cast<double>(adjusted.size());
    const double reduction = 1 - Cov(adjusted, adjusted) / Cov(arm->influence, arm->influence);
    EXPECT_GT(reduction, 0.05) << name;  // the propensity carries over
    const std::string side = std::string(name) == "control" ? "control" : "variant";
    EXPECT_NEAR(cuped["varianceReduction"][side].get<double>(), reduction, 1e-9) << name;
  }
  const double diff =
      (treatment.ratio - theta * treatment.pre_ratio) - (control.ratio - theta * control.pre_ratio);
  EXPECT_NEAR(cuped["absolute"]["lift"].get<double>(), diff, 1e-9 * std::fabs(diff));
  EXPECT_NEAR(cuped["relative"]["lift"].get<double>(), diff / control.ratio,
              1e-9 * std::fabs(diff / control.ratio));
  // The interval is diff ± t·se with se from the adjusted influences: its
  // half-width over se is a t quantile near 1.96 at these df.
  const double se = std::sqrt(adjusted_variance["control"] + adjusted_variance["b"]);
  const double halfwidth =
      (cuped["absolute"]["ci"][1].get<double>() - cuped["absolute"]["ci"][0].get<double>()) / 2;
  EXPECT_NEAR(halfwidth / se, 1.9606, 2e-3);
  // Narrower than the unadjusted ratio's interval.
  auto width = [](const nlohmann::ordered_json& ci) {
    return ci[1].get<double>() - ci[0].get<double>();
  };
  EXPECT_LT(width(cuped["absolute"]["ci"]), width(row["comparison"]["absolute"]["ci"]));
}

TEST(EventResults, CupedRatioFromTheStreamMatchesAnIndependentComputation) {
  TempDirectory dir;
  std::map<std::string, std::vector<UnitValues>> arms;
  std::vector<Event> events = Stream(&arms);
  {
    // A small checkpoint interval and cache: unit states (with their
    // pre-period entries) go to the database and come back mid-stream.
    auto store = EventStore::Open(
        {.directory = dir.path(), .checkpoint_events = 1000, .max_cached_units = 300});
    ASSERT_TRUE(store.ok()) << store.status();
    for (size_t at = 0; at < events.size(); at += 500) {
      std::vector<Event> batch(
          events.begin() + static_cast<std::ptrdiff_t>(at),
          events.begin() + static_cast<std::ptrdiff_t>(std::min(events.size(), at + 500)));
      ASSERT_TRUE((*store)->Append(std::move(batch)).ok());
    }
    absl::StatusOr<nlohmann::ordered_json> results = Results(**store, "e", {});
    ASSERT_TRUE(results.ok()) << results.status();
    ExpectMatchesIndependentComputation(*results, arms);
  }
  {  // reopened: the checkpointed sums, and units read back, give the same
    auto store = EventStore::Open({.directory = dir.path()});
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<nlohmann::ordered_json> results = Results(**store, "e", {});
    ASSERT_TRUE(results.ok()) << results.status();
    ExpectMatchesIndependentComputation(*results, arms);
  }
}

// An aggregate record written before CUPED for ratios (no pre-period
// denominator fields) reads with those sums 0: the ratio has no covariate
// and the results carry no "cuped".
TEST(EventResults, AnAggregateRecordFromBeforeCupedRatiosReadsWithoutACovariate) {
  const std::string old_record =
      R"({"variants":{"control":{"units":3,"metrics":[{"kind":"ratio","metric":"ctr","sum":3,)"
      R"("sumSquares":5,"denSum":9,"denSumSquares":29,"products":11,"covariateSum":0,)"
      R"("covariateSumSquares":0,"covariateProducts":0}]},"b":{"units":3,"metrics":[{"kind":)"
      R"("ratio","metric":"ctr","sum":4,"sumSquares":6,"denSum":8,"denSumSquares":24,)"
      R"("products":12,"covariateSum":0,"covariateSumSquares":0,"covariateProducts":0}]}}})";
  absl::StatusOr<ExperimentSums> sums = DecodeExperimentSums(old_record);
  ASSERT_TRUE(sums.ok()) << sums.status();
  const MetricSums& ctr = sums->variants["b"].metrics[{EventType::kRatio, "ctr"}];
  EXPECT_EQ(ctr.products, 12);
  EXPECT_EQ(ctr.covariate_den_sum, 0);
  EXPECT_EQ(ctr.den_covariate_den_products, 0);
  absl::StatusOr<nlohmann::ordered_json> results = ExperimentResults("e", *sums, {});
  ASSERT_TRUE(results.ok()) << results.status();
  const nlohmann::ordered_json& row = (*results)["metrics"][0]["variants"][1];
  EXPECT_TRUE(row.contains("comparison")) << row.dump();
  EXPECT_FALSE(row["comparison"].contains("cuped")) << row.dump();
  // And the new fields round-trip through the record.
  MetricSums with_covariate = ctr;
  with_covariate.covariate_den_sum = 7;
  with_covariate.covariate_num_den_products = 2.5;
  with_covariate.den_covariate_den_products = 31;
  ExperimentSums next;
  next.variants["b"].units = 3;
  next.variants["b"].metrics[{EventType::kRatio, "ctr"}] = with_covariate;
  absl::StatusOr<ExperimentSums> decoded = DecodeExperimentSums(EncodeExperimentSums(next));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const MetricSums& back = decoded->variants["b"].metrics[{EventType::kRatio, "ctr"}];
  EXPECT_EQ(back.covariate_den_sum, 7);
  EXPECT_EQ(back.covariate_num_den_products, 2.5);
  EXPECT_EQ(back.den_covariate_den_products, 31);
}

}  // namespace
}  // namespace capstan::experiments
