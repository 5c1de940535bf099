// The results endpoint of an experiment defined in the layered model, end to
// end: a real `capstan store` and `capstan experiments serve --events-dir`,
// the model written through the document API, exposures posted as events.
// Checks: control is the definition's first variant (not "control", not the
// first by name), the SRM check uses the defined weights (a 50/50 experiment
// exposed 1000 vs 800 is a mismatch; the same counts under 55/45 are not), a
// defined variant never exposed is listed with 0 units, the query overrides
// the definition, the lifecycle route shows who moved the experiment and
// /v1/status reports the model's store revision.
#include <csignal>
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

}  // namespace
}  // namespace capstan::e2e
