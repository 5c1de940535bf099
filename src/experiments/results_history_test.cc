#include "experiments/results_history.h"

#include <atomic>

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

Json Results(int units_a, int units_b, double lift) {
  return Json::parse(R"({"experiment":"e","control":"a",
    "variants":[{"variant":"a","units":)" +
                     std::to_string(units_a) + R"(,"weight":0.5},{"variant":"b","units":)" +
                     std::to_string(units_b) + R"(,"weight":0.5}],
    "metrics":[{"metric":"buy","kind":"conversion","variants":[
      {"variant":"a","n":10,"mean":0.1,"variance":0.09},
      {"variant":"b","n":12,"mean":0.2,"variance":0.16,"comparison":{
        "absolute":{"lift":0.1,"ci":[0.0,0.2],"pValue":0.04,"pValueAdjusted":0.04},
        "relative":{"lift":)" +
                     std::to_string(lift) +
                     R"(,"ci":[-0.5,2.5],"pValue":0.1,"pValueAdjusted":0.1}}}]}]})");
}

TEST(ResultsHistoryTest, CompactSampleKeepsWhatThePlotNeeds) {
  Json sample = ResultsHistory::CompactSample(Results(10, 12, 1.0), 1234);
  EXPECT_EQ(sample["t"], 1234);
  EXPECT_EQ(sample["units"]["a"], 10);
  EXPECT_EQ(sample["units"]["b"], 12);
  const Json& b = sample["metrics"][0]["variants"][1];
  EXPECT_EQ(sample["metrics"][0]["metric"], "buy");
  EXPECT_EQ(b["variant"], "b");
  EXPECT_EQ(b["n"], 12);
  EXPECT_DOUBLE_EQ(b["relative"]["lift"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(b["relative"]["ci"][1].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(b["absolute"]["lift"].get<double>(), 0.1);
  // The control has no comparison, and no p-values are kept.
  EXPECT_FALSE(sample["metrics"][0]["variants"][0].contains("relative"));
  EXPECT_FALSE(b["relative"].contains("pValue"));
}

TEST(ResultsHistoryTest, RingKeepsTheLastCapacitySamplesOldestFirst) {
  int units = 0;
  ResultsHistory history([] { return std::vector<std::string>{"e"}; },
                         [&units](const std::string&) -> std::optional<Json> {
                           ++units;
                           return Results(units, units, 0.5);
                         },
                         {.capacity = 3});
  for (int t = 1; t <= 5; ++t) history.SampleOnce(t * 1000);
  Json json = history.HistoryJson("e");
  ASSERT_EQ(json["samples"].size(), 3u);
  EXPECT_EQ(json["samples"][0]["t"], 3000);
  EXPECT_EQ(json["samples"][2]["t"], 5000);
  EXPECT_EQ(json["samples"][2]["units"]["a"], 5);
  EXPECT_EQ(json["capacity"], 3);
  EXPECT_EQ(json["experiment"], "e");
}

TEST(ResultsHistoryTest, OnlyRunningExperimentsWithResultsAreSampled) {
  std::vector<std::string> running = {"e", "no-results"};
  ResultsHistory history([&running] { return running; },
                         [](const std::string& id) -> std::optional<Json> {
                           if (id == "no-results") return std::nullopt;
                           return Results(1, 1, 0);
                         });
  history.SampleOnce(1);
  EXPECT_EQ(history.HistoryJson("e")["samples"].size(), 1u);
  EXPECT_EQ(history.HistoryJson("no-results")["samples"].size(), 0u);
  // Stopped: no more samples, the old ones stay.
  running = {};
  history.SampleOnce(2);
  EXPECT_EQ(history.HistoryJson("e")["samples"].size(), 1u);
  EXPECT_EQ(history.HistoryJson("never")["samples"].size(), 0u);
}

TEST(ResultsHistoryTest, ARunningExperimentIsSampledWhenFirstAskedFor) {
  int fetched = 0;
  ResultsHistory history([] { return std::vector<std::string>{"e"}; },
                         [&fetched](const std::string&) -> std::optional<Json> {
                           ++fetched;
                           return Results(1, 1, 0);
                         });
  EXPECT_EQ(history.HistoryJson("e")["samples"].size(), 1u);
  EXPECT_EQ(history.HistoryJson("e")["samples"].size(), 1u);  // not again on every read
  EXPECT_EQ(fetched, 1);
}

TEST(ResultsHistoryTest, BoundedNumberOfExperimentsDropsTheStalest) {
  std::vector<std::string> running = {"a", "b"};
  ResultsHistory history([&running] { return running; },
                         [](const std::string&) -> std::optional<Json> { return Results(1, 1, 0); },
                         {.max_experiments = 2});
  history.SampleOnce(1);
  running = {"b", "c"};
  history.SampleOnce(2);  // "a" was sampled longest ago
  EXPECT_EQ(history.HistoryJson("a")["samples"].size(), 0u);
  EXPECT_EQ(history.HistoryJson("b")["samples"].size(), 2u);
  EXPECT_EQ(history.HistoryJson("c")["samples"].size(), 1u);
}

TEST(ResultsHistoryTest, SamplerThreadTakesAFirstSampleAndStopsOnDestruction) {
  std::atomic<int> fetched{0};
  {
    ResultsHistory history([] { return std::vector<std::string>{"e"}; },
                           [&fetched](const std::string&) -> std::optional<Json> {
                             ++fetched;
                             return Results(1, 1, 0);
                           },
                           {.interval = std::chrono::hours(1)});
    history.Start();
    // The first sample is taken at once; wait for it with a bounded deadline.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (fetched.load() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    EXPECT_GE(fetched.load(), 1);
  }  // the destructor must not wait out the hour
  EXPECT_EQ(fetched.load(), 1);
}

TEST(ResultsHistoryTest, RunningExperimentsFromTheSnapshot) {
  DocumentSnapshot snapshot;
  auto add = [&snapshot](std::string id, Json spec) {
    auto doc = std::make_shared<ConfigDocument>();
    doc->kind = "experiments";
    doc->id = id;
    doc->spec = std::move(spec);
    snapshot.kinds["experiments"][id] = doc;
  };
  add("on", {{"state", "running"}});
  add("draft", {{"state", "draft"}});
  add("bare", Json::object());
  EXPECT_EQ(RunningExperiments(snapshot), std::vector<std::string>{"on"});
}

}  // namespace
}  // namespace capstan::experiments
