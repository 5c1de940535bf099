// The results endpoint of an experiment defined in the layered model, end to
// end: a real `capstan store` and `capstan experiments serve --events-dir`,
// the model written through the document API, exposures posted as events.
// Checks: control is the definition's first variant (not "control", not the
// first by name), the SRM check uses the defined weights (a 50/50 experiment
// exposed 1000 vs 800 is a mismatch; the same counts under 55/45 are not), a
// defined variant never exposed is listed with 0 units, the query overrides
// the definition, the lifecycle route shows who moved the experiment and
// /v1/status reports the model's store revision. And CUPED for a ratio
// metric: pre-period ratio events posted as events become the covariate,
// the results show the regression-adjusted ratio and its variance
// reduction, equal to what POST /v1/analyze's cupedRatio answers for the
// same units' sums.
#include <cmath>
#include <csignal>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace capstan::e2e {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

class ExperimentsResultsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("experiments_results");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    service_ = StartExperimentsService(store_->endpoint(), dir_->path(),
                                       {"--events-dir", dir_->path() + "/events"}, &port_);
    ASSERT_NE(port_, 0) << service_->Log();
  }

  void TearDown() override {
    if (service_ != nullptr) {
      service_->Signal(SIGTERM);
      service_->Wait(30s);
    }
    if (store_ != nullptr) store_->Stop();
  }

  HttpAnswer Put(const std::string& path, const std::string& body, const std::string& user) {
    return HttpCall(port_, "PUT", path, body,
                    {"Content-Type: application/json", "X-Capstan-User: " + user});
  }

  Json Get(const std::string& target) {
    HttpAnswer a = HttpCall(port_, "GET", target);
    EXPECT_EQ(a.status, 200) << target << " " << a.body;
    return Json::parse(a.body, nullptr, false);
  }

  // `count` exposures of experiment `experiment` to `variant`, each unit also
  // converting on "purchase" when its index is a multiple of 10.
  void Expose(const std::string& experiment, const std::string& variant, int count) {
    std::string body;
    for (int i = 0; i < count; ++i) {
      std::string unit = experiment + "-" + variant + "-" + std::to_string(i);
      body += R"({"type":"exposure","key":"x-)" + unit + R"(","experiment":")" + experiment +
              R"(","unit":")" + unit + R"(","variant":")" + variant + R"(","ts":1700000000000})" +
              "\n";
      if (i % 10 == 0) {
        body += R"({"type":"conversion","key":"c-)" + unit + R"(","experiment":")" + experiment +
                R"(","unit":")" + unit + R"(","metric":"purchase","ts":1700000000001})" + "\n";
      }
    }
    HttpAnswer a =
        HttpCall(port_, "POST", "/v1/events", body, {"Content-Type: application/x-ndjson"});
    ASSERT_EQ(a.status, 200) << a.body;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  int port_ = 0;
};

TEST_F(ExperimentsResultsE2E, ResultsUseTheDefinitionsControlAndWeights) {
  ASSERT_EQ(Put("/v1/domains/main", "{}", "ann").status, 201);
  ASSERT_EQ(Put("/v1/layers/checkout", R"({"domain": "main"})", "ann").status, 201);
  // "treatment" is defined first, so it is the control, though "baseline"
  // sorts first and neither is named "control".
  ASSERT_EQ(Put("/v1/experiments/even", R"({"layer": "checkout", "range": [0, 0.5],
                  "variants": [{"id": "treatment", "weight": 0.5},
                               {"id": "baseline", "weight": 0.5}]})",
                "ann")
                .status,
            201);
  HttpAnswer skewed = Put("/v1/experiments/skewed", R"({"layer": "checkout", "range": [0.5, 1],
                  "state": "running",
                  "variants": [{"id": "zeta", "weight": 0.55}, {"id": "alpha", "weight": 0.45},
                               {"id": "never", "weight": 0}],
                  "analysis": {"correction": "bh"}})",
                          "bob");
  ASSERT_EQ(skewed.status, 201) << skewed.body;
  const int64_t skewed_revision = Json::parse(skewed.body)["revision"].get<int64_t>();
  ASSERT_EQ(Put("/v1/experiments/even?revision=" +
                    std::to_string(Get("/v1/experiments/even")["revision"].get<int64_t>()),
                R"({"layer": "checkout", "range": [0, 0.5], "state": "running",
                    "variants": [{"id": "treatment", "weight": 0.5},
                                 {"id": "baseline", "weight": 0.5}]})",
                "cy")
                .status,
            200);

  ASSERT_NO_FATAL_FAILURE(Expose("even", "treatment", 1000));
  ASSERT_NO_FATAL_FAILURE(Expose("even", "baseline", 800));
  ASSERT_NO_FATAL_FAILURE(Expose("skewed", "zeta", 1000));
  ASSERT_NO_FATAL_FAILURE(Expose("skewed", "alpha", 800));

  // The watcher has the definitions once the results say so.
  Json even;
  ASSERT_TRUE(Eventually([&] {
    even = Get("/v1/experiments/even/results");
    return even["source"] == "model";
  })) << even.dump();
  EXPECT_EQ(even["control"], "treatment") << even.dump();
  EXPECT_EQ(even["variants"][0]["variant"], "treatment");
  EXPECT_EQ(even["variants"][0]["units"], 1000);
  EXPECT_EQ(even["variants"][0]["weight"], 0.5);
  EXPECT_EQ(even["variants"][1]["units"], 800);
  EXPECT_EQ(even["srm"]["status"], "mismatch") << even.dump();
  EXPECT_EQ(even["correction"], "holm");
  EXPECT_EQ(even["method"], "fixed");
  const Json& baseline = even["metrics"][0]["variants"][1];
  EXPECT_EQ(baseline["variant"], "baseline");
  EXPECT_TRUE(baseline["comparison"]["absolute"]["pValueAdjusted"].is_number()) << even.dump();

  Json results = Get("/v1/experiments/skewed/results");
  EXPECT_EQ(results["source"], "model");
  EXPECT_EQ(results["control"], "zeta");
  // 1000:800 is close to 55:45 (990:810): no mismatch.
  EXPECT_EQ(results["srm"]["status"], "ok") << results.dump();
  ASSERT_EQ(results["variants"].size(), 3u) << results.dump();
  EXPECT_EQ(results["variants"][2], Json({{"variant", "never"}, {"units", 0}, {"weight", 0.0}}));
  EXPECT_EQ(results["correction"], "bh");

  // The query overrides the definition.
  results = Get("/v1/experiments/skewed/results?control=alpha&correction=none&sequential=true");
  EXPECT_EQ(results["control"], "alpha");
  EXPECT_EQ(results["correction"], "none");
  EXPECT_EQ(results["method"], "sequential");
  EXPECT_EQ(results["sequentialTuning"], 5000.0);
  HttpAnswer bad = HttpCall(port_, "GET", "/v1/experiments/skewed/results?control=nope");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(Json::parse(bad.body, nullptr, false)["error"]["field"], "control") << bad.body;
  // Known only from events: the old rules (control by name).
  ASSERT_NO_FATAL_FAILURE(Expose("loose", "b", 10));
  ASSERT_NO_FATAL_FAILURE(Expose("loose", "a", 10));
  results = Get("/v1/experiments/loose/results");
  EXPECT_EQ(results["source"], "events");
  EXPECT_EQ(results["control"], "a");

  // Who moved "even" and when.
  Json lifecycle = Get("/v1/experiments/even/lifecycle");
  EXPECT_EQ(lifecycle["state"], "running") << lifecycle.dump();
  ASSERT_EQ(lifecycle["transitions"].size(), 2u) << lifecycle.dump();
  EXPECT_EQ(lifecycle["transitions"][0]["to"], "draft");
  EXPECT_EQ(lifecycle["transitions"][0]["by"], "ann");
  EXPECT_EQ(lifecycle["transitions"][1]["from"], "draft");
  EXPECT_EQ(lifecycle["transitions"][1]["to"], "running");
  EXPECT_EQ(lifecycle["transitions"][1]["by"], "cy");
  EXPECT_FALSE(lifecycle["transitions"][1]["at"].get<std::string>().empty());
  EXPECT_EQ(HttpCall(port_, "GET", "/v1/experiments/ghost/lifecycle").status, 404);

  // The model's revision is the store's, not 0: at least the skewed write's.
  Json status = Get("/v1/status");
  EXPECT_GE(status["model"]["revision"].get<int64_t>(), skewed_revision) << status.dump();
  EXPECT_EQ(Get("/v1/experiments/skewed")["revision"], skewed_revision);
}

TEST_F(ExperimentsResultsE2E, RatioMetricsGetCupedFromTheirPrePeriod) {
  // Clicks per session; each unit's click propensity carries over from the
  // pre-period (a day before the exposure) into the outcome.
  constexpr int64_t kExposureMs = 1700000000000;
  constexpr int64_t kDayMs = 24 * 3600 * 1000;
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> uniform(0, 1);
  struct ArmSums {
    double n = 0, m = 0, mm = 0, d = 0, dd = 0, md = 0, m0 = 0, m0m0 = 0, d0 = 0, d0d0 = 0,
           m0d0 = 0, mm0 = 0, md0 = 0, dm0 = 0, dd0 = 0;
  };
  std::map<std::string, ArmSums> arms;
  std::string body;
  auto event = [&](const std::string& json) { body += json + "\n"; };
  for (int i = 0; i < 600; ++i) {
    const std::string unit = "r" + std::to_string(i);
    const std::string variant = i % 2 == 0 ? "control" : "b";
    const double propensity = 0.05 + 0.9 * uniform(rng);
    auto clicks = [&](double sessions, double p) {
      double c = 0;
      for (int s = 0; s < static_cast<int>(sessions); ++s) c += uniform(rng) < p ? 1 : 0;
      return c;
    };
    const double d0 = 5 + std::floor(6 * uniform(rng)), d = 5 + std::floor(6 * uniform(rng));
    const double m0 = clicks(d0, propensity);
    const double m = clicks(d, std::min(1.0, propensity * (variant == "b" ? 1.1 : 1.0)));
    auto ratio = [&](const std::string& key, double num, double den, int64_t ts) {
      event(R"({"type":"ratio","key":")" + key + R"(","experiment":"ctr-test","unit":")" + unit +
            R"(","metric":"ctr","numerator":)" + std::to_string(static_cast<int>(num)) +
            R"(,"denominator":)" + std::to_string(static_cast<int>(den)) + R"(,"ts":)" +
            std::to_string(ts) + "}");
    };
    ratio("pre-" + unit, m0, d0, kExposureMs - kDayMs);
    event(R"({"type":"exposure","key":"x-)" + unit + R"(","experiment":"ctr-test","unit":")" +
          unit + R"(","variant":")" + variant + R"(","ts":)" + std::to_string(kExposureMs) + "}");
    ratio("post-" + unit, m, d, kExposureMs + 1000);
    ArmSums& a = arms[variant];
    a.n += 1, a.m += m, a.mm += m * m, a.d += d, a.dd += d * d, a.md += m * d;
    a.m0 += m0, a.m0m0 += m0 * m0, a.d0 += d0, a.d0d0 += d0 * d0, a.m0d0 += m0 * d0;
    a.mm0 += m * m0, a.md0 += m * d0, a.dm0 += d * m0, a.dd0 += d * d0;
  }
  HttpAnswer posted =
      HttpCall(port_, "POST", "/v1/events", body, {"Content-Type: application/x-ndjson"});
  ASSERT_EQ(posted.status, 200) << posted.body;

  Json results = Get("/v1/experiments/ctr-test/results");
  ASSERT_EQ(results["metrics"].size(), 1u) << results.dump();
  const Json& metric = results["metrics"][0];
  EXPECT_EQ(metric["kind"], "ratio");
  const Json& row = metric["variants"][1];
  ASSERT_EQ(row["variant"], "b") << results.dump();
  ASSERT_TRUE(row["comparison"].contains("cuped")) << row.dump();
  const Json& cuped = row["comparison"]["cuped"];
  EXPECT_GT(cuped["theta"].get<double>(), 0.1) << cuped.dump();
  EXPECT_GT(cuped["varianceReduction"]["control"].get<double>(), 0.2) << cuped.dump();
  EXPECT_GT(cuped["varianceReduction"]["variant"].get<double>(), 0.2) << cuped.dump();
  auto width = [](const Json& ci) { return ci[1].get<double>() - ci[0].get<double>(); };
  EXPECT_LT(width(cuped["absolute"]["ci"]), width(row["comparison"]["absolute"]["ci"]));
  RecordProperty("variance_reduction_control", cuped["varianceReduction"]["control"].dump());
  RecordProperty("variance_reduction_variant", cuped["varianceReduction"]["variant"].dump());

  // The same units' sums through the statistics service give the same answer.
  auto arm_json = [](const ArmSums& a) {
    return Json{{"n", a.n},
                {"numerator", {{"sum", a.m}, {"sum_squares", a.mm}}},
                {"denominator", {{"sum", a.d}, {"sum_squares", a.dd}}},
                {"sum_of_products", a.md},
                {"pre",
                 {{"numerator", {{"sum", a.m0}, {"sum_squares", a.m0m0}}},
                  {"denominator", {{"sum", a.d0}, {"sum_squares", a.d0d0}}},
                  {"sum_of_products", a.m0d0}}},
                {"post_pre_sum_of_products",
                 {{"numerator_numerator", a.mm0},
                  {"numerator_denominator", a.md0},
                  {"denominator_numerator", a.dm0},
                  {"denominator_denominator", a.dd0}}}};
  };
  Json request = {
      {"op", "cupedRatio"}, {"a", arm_json(arms["control"])}, {"b", arm_json(arms["b"])}};
  HttpAnswer analyzed =
      HttpCall(port_, "POST", "/v1/analyze", request.dump(), {"Content-Type: application/json"});
  ASSERT_EQ(analyzed.status, 200) << analyzed.body;
  Json answer = Json::parse(analyzed.body);
  auto near = [](const Json& a, const Json& b) {
    return std::abs(a.get<double>() - b.get<double>()) <= 1e-9 * std::abs(b.get<double>());
  };
  EXPECT_TRUE(near(cuped["theta"], answer["theta"])) << cuped.dump() << answer.dump();
  EXPECT_TRUE(near(cuped["absolute"]["lift"], answer["diff"])) << cuped.dump() << answer.dump();
  EXPECT_TRUE(near(cuped["absolute"]["pValue"], answer["p_value"]));
  EXPECT_TRUE(near(cuped["relative"]["lift"], answer["relative"]["lift"]));
  EXPECT_TRUE(near(cuped["varianceReduction"]["variant"], answer["b"]["variance_reduction"]));

  // A request missing a cross product is refused naming it.
  request["b"].erase("post_pre_sum_of_products");
  HttpAnswer refused =
      HttpCall(port_, "POST", "/v1/analyze", request.dump(), {"Content-Type: application/json"});
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(Json::parse(refused.body, nullptr, false)["error"]["field"],
            "b.post_pre_sum_of_products")
      << refused.body;
}

}  // namespace
}  // namespace capstan::e2e
