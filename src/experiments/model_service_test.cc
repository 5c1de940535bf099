// The store-free parts of model_service.h: the kinds' validators, building
// the model from a configuration snapshot (and keeping the last good one),
// and the evaluate / analyze handlers. The write checks against a real store
// and `capstan experiments serve` are in tests/e2e/experiments_service_test.cc.
#include "experiments/model_service.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

using ::testing::HasSubstr;

const char kDomain[] = R"({"id": "main"})";
const char kLayer[] = R"({"domain": "main", "parameters": {"color": "blue"}})";
const char kExperiment[] = R"({
  "layer": "checkout", "state": "running",
  "variants": [{"id": "control", "parameters": {"color": "blue"}},
               {"id": "green", "parameters": {"color": "green"}}]})";

// A configuration snapshot holding `documents` ({kind, id, spec JSON}).
std::shared_ptr<const DocumentSnapshot> Documents(
    const std::vector<std::tuple<std::string, std::string, std::string>>& documents,
    uint64_t generation) {
  auto snapshot = std::make_shared<DocumentSnapshot>();
  snapshot->generation = generation;
  for (const auto& [kind, id, spec] : documents) {
    auto doc = std::make_shared<ConfigDocument>();
    doc->kind = kind;
    doc->id = id;
    doc->spec = Json::parse(spec);
    snapshot->kinds[kind][id] = std::move(doc);
  }
  return snapshot;
}

Json BodyOf(const net::HttpResponse& response) { return Json::parse(response.body); }

TEST(ModelSpecTest, TheIdComesFromThePathAndErrorsStartWithTheField) {
  auto layer = ParseModelSpec(DocumentKind::kLayer, "checkout", Json::parse(kLayer));
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ(layer->id, "checkout");

  absl::Status wrong_id =
      ParseModelSpec(DocumentKind::kLayer, "checkout", Json::parse(R"({"id": "other"})")).status();
  EXPECT_THAT(std::string(wrong_id.message()), HasSubstr("id: must equal"));

  absl::Status bad = ParseModelSpec(DocumentKind::kExperiment, "e1",
                                    Json::parse(R"({"layer": "checkout", "coverage": 2,
                                                    "variants": [{"id": "a"}]})"))
                         .status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("coverage: "));
  EXPECT_THAT(std::string(bad.message()), ::testing::Not(HasSubstr("experiments/e1: ")));
  // The service's error names the field: what comes before the first ": ".
  Json error = BodyOf(ErrorResponse(bad))["error"];
  EXPECT_EQ(error["code"], "invalid");
  EXPECT_FALSE(error["field"].get<std::string>().empty());
  EXPECT_EQ(error["field"].get<std::string>().find("experiments/"), std::string::npos);

  EXPECT_FALSE(ParseModelSpec(DocumentKind::kLayer, "a:b", Json::parse(kLayer)).ok());
}

TEST(ModelSpecTest, ModelKeysAreTheServiceLayoutAndEnvelopesAreUnwrapped) {
  ConfigDocument doc;
  doc.kind = "layers";
  doc.id = "checkout";
  doc.spec = Json::parse(R"({"id": "checkout", "domain": "main"})");
  doc.version = 2;
  std::string key = ModelDocumentKey(DocumentKind::kLayer, "checkout");
  ConfigStore store(nullptr);  // the default prefix; no client: only names
  EXPECT_EQ(key, store.DocumentKey("layers", "checkout"));
  auto parsed = ParseModelDocument(key, doc.ToStored().dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(std::get<LayerDoc>(parsed->object).domain, "main");
}

// A history record as ConfigStore writes it; `state` empty: a spec without
// one; `deleted`: a delete record.
HistoryRecord Record(int64_t sequence, const std::string& op, const std::string& user,
                     const std::string& state, int version) {
  Json document;
  if (op != "delete") {
    Json spec = {{"layer", "checkout"}, {"variants", Json::array({{{"id", "a"}}})}};
    if (!state.empty()) spec["state"] = state;
    document = {{"kind", "experiments"}, {"id", "e"}, {"version", version}, {"spec", spec}};
  }
  return {sequence, Json{{"op", op},
                         {"user", user},
                         {"at", "2026-12-07T05:00:0" + std::to_string(sequence) + "Z"},
                         {"version", version},
                         {"previousRevision", 0},
                         {"document", document}}};
}

TEST(ExperimentLifecycleTest, StateChangesWithWhoAndWhen) {
  std::vector<HistoryRecord> history = {
      Record(1, "create", "ann", "", 1),          // no state: draft
      Record(2, "update", "bob", "draft", 2),     // an edit, no change
      Record(3, "update", "cy", "running", 3),    // started
      Record(4, "update", "cy", "running", 4),    // coverage raised, say
      Record(5, "update", "dee", "stopped", 5),   // stopped
      Record(6, "delete", "eve", "", 6),          // gone
      Record(7, "create", "fay", "launched", 1),  // a new life, launched
  };
  Json lifecycle = ExperimentLifecycle("e", history);
  EXPECT_EQ(lifecycle["experiment"], "e");
  EXPECT_EQ(lifecycle["state"], "launched");
  const Json& t = lifecycle["transitions"];
  ASSERT_EQ(t.size(), 5u) << lifecycle.dump();
  EXPECT_EQ(t[0], Json({{"from", nullptr},
                        {"to", "draft"},
                        {"by", "ann"},
                        {"at", "2026-12-07T05:00:01Z"},
                        {"version", 1},
                        {"sequence", 1}}));
  EXPECT_EQ(t[1]["from"], "draft");
  EXPECT_EQ(t[1]["to"], "running");
  EXPECT_EQ(t[1]["by"], "cy");
  EXPECT_EQ(t[1]["sequence"], 3);
  EXPECT_EQ(t[2]["to"], "stopped");
  EXPECT_EQ(t[2]["by"], "dee");
  EXPECT_EQ(t[3]["from"], "stopped");
  EXPECT_TRUE(t[3]["to"].is_null());
  EXPECT_EQ(t[3]["by"], "eve");
  EXPECT_TRUE(t[4]["from"].is_null());
  EXPECT_EQ(t[4]["to"], "launched");

  Json deleted = ExperimentLifecycle(
      "e", {Record(1, "create", "ann", "running", 1), Record(2, "delete", "bob", "", 2)});
  EXPECT_TRUE(deleted["state"].is_null());
  EXPECT_EQ(deleted["transitions"].size(), 2u);
}

TEST(BuildModelSnapshotTest, CrossReferencesNameTheDocument) {
  auto good = BuildModelSnapshot(*Documents({{"domains", "main", kDomain},
                                             {"layers", "checkout", kLayer},
                                             {"experiments", "e1", kExperiment}},
                                            1));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)->experiments().size(), 1u);

  auto dangling = BuildModelSnapshot(
      *Documents({{"domains", "main", kDomain}, {"experiments", "e1", kExperiment}}, 1));
  ASSERT_FALSE(dangling.ok());
  EXPECT_THAT(std::string(dangling.status().message()), HasSubstr("experiments/e1: layer"));

  auto unparsable = BuildModelSnapshot(*Documents({{"layers", "l", R"({"launch": 3})"}}, 1));
  ASSERT_FALSE(unparsable.ok());
  EXPECT_THAT(std::string(unparsable.status().message()), HasSubstr("layers/l: launch"));
}

class LayeredModelServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceContext context{
        .store = &store_, .watcher = nullptr, .router = &router_, .registry = &registry_};
    auto installed = LayeredModelService::Install(
        context, {.max_batch_units = 3, .exposure_sink = [this](const Exposure& e) {
                    std::lock_guard lock(exposures_mu_);  // sinks run on any thread
                    exposures_.push_back(std::string(e.experiment) + "/" + std::string(e.unit));
                  }});
    ASSERT_TRUE(installed.ok()) << installed.status();
    model_ = *std::move(installed);
  }

  net::HttpResponse Post(const std::string& path, const std::string& body) {
    net::HttpRequest request;
    request.method = "POST";
    request.path = path;
    request.body = body;
    return router_.Dispatch(request);
  }

  ConfigStore store_{nullptr};
  net::HttpRouter router_;
  metrics::Registry registry_;
  std::unique_ptr<LayeredModelService> model_;
  std::mutex exposures_mu_;
  std::vector<std::string> exposures_;
};

TEST_F(LayeredModelServiceTest, RegistersEveryModelKind) {
  for (const char* kind :
       {"units", "domains", "layers", "experiments", "holdouts", "groups", "flags"})
    EXPECT_TRUE(store_.HasKind(kind)) << kind;
}

TEST_F(LayeredModelServiceTest, ABadSetNeverReplacesAGoodOne) {
  EXPECT_EQ(Post("/v1/evaluate", R"({"attributes": {"id": "u1"}})").status, 503);

  model_->OnSnapshot(Documents({{"domains", "main", kDomain},
                                {"layers", "checkout", kLayer},
                                {"experiments", "e1", kExperiment}},
                               1));
  net::HttpResponse first = Post("/v1/evaluate", R"({"attributes": {"id": "u1"}})");
  ASSERT_EQ(first.status, 200) << first.body;
  Json result = BodyOf(first);
  ASSERT_EQ(result["assignments"].size(), 1u);
  EXPECT_EQ(result["assignments"][0]["experiment"], "e1");
  EXPECT_EQ(result["generation"], 1);

  // The same unit in the in-process Assigner over the same documents.
  Assigner in_process(*BuildModelSnapshot(*Documents({{"domains", "main", kDomain},
                                                      {"layers", "checkout", kLayer},
                                                      {"experiments", "e1", kExperiment}},
                                                     1)));
  Json attributes = {{"id", "u1"}};
  EvaluationResult expected;
  in_process.Evaluate(attributes, &expected);
  EXPECT_EQ(result["assignments"], expected.ToJson()["assignments"]);
  EXPECT_EQ(result["parameters"], expected.ToJson()["parameters"]);

  // The layer disappears: the set does not build, the last good one stays.
  model_->OnSnapshot(
      Documents({{"domains", "main", kDomain}, {"experiments", "e1", kExperiment}}, 2));
  Json status = model_->StatusJson();
  EXPECT_FALSE(status["ok"].get<bool>());
  EXPECT_EQ(status["generation"], 1);
  EXPECT_EQ(status["error"]["document"], "experiments/e1");
  EXPECT_EQ(status["error"]["field"], "layer");
  EXPECT_EQ(status["error"]["generation"], 2);
  net::HttpResponse still = Post("/v1/evaluate", R"({"attributes": {"id": "u1"}})");
  EXPECT_EQ(BodyOf(still)["assignments"], result["assignments"]);
  EXPECT_EQ(BodyOf(still)["generation"], 1);

  // Mended: the new set replaces it.
  model_->OnSnapshot(Documents({{"domains", "main", kDomain}}, 3));
  status = model_->StatusJson();
  EXPECT_TRUE(status["ok"].get<bool>());
  EXPECT_EQ(status["generation"], 3);
  EXPECT_FALSE(status.contains("error"));
  EXPECT_EQ(BodyOf(Post("/v1/evaluate", R"({"attributes": {"id": "u1"}})"))["assignments"].size(),
            0u);
}

TEST_F(LayeredModelServiceTest, ExposuresAreLoggedOncePerUnit) {
  model_->OnSnapshot(Documents({{"domains", "main", kDomain},
                                {"layers", "checkout", kLayer},
                                {"experiments", "e1", kExperiment}},
                               1));
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Post("/v1/evaluate", R"({"attributes": {"id": "u1"}})").status, 200);
  }
  ASSERT_EQ(Post("/v1/evaluate", R"({"attributes": {"id": "u2"}, "exposures": false})").status,
            200);
  EXPECT_EQ(exposures_, std::vector<std::string>{"e1/u1"});
  EXPECT_EQ(model_->exposures().logged(), 1u);
  EXPECT_EQ(model_->exposures().deduplicated(), 2u);
  std::string metrics = registry_.RenderText();
  EXPECT_THAT(metrics, HasSubstr("capstan_experiments_exposures_logged 1"));
  EXPECT_THAT(metrics, HasSubstr("capstan_experiments_exposures_deduplicated 2"));
  EXPECT_THAT(metrics, HasSubstr("capstan_experiments_evaluations_total 4"));
}

TEST_F(LayeredModelServiceTest, BatchesAreBoundedAndErrorsNameTheUnit) {
  model_->OnSnapshot(Documents({{"domains", "main", kDomain},
                                {"layers", "checkout", kLayer},
                                {"experiments", "e1", kExperiment}},
                               1));
  net::HttpResponse batch = Post("/v1/evaluate/batch",
                                 R"({"units": [{"attributes": {"id": "a"}},
                                               {"attributes": {"id": "b"}}]})");
  ASSERT_EQ(batch.status, 200) << batch.body;
  EXPECT_EQ(BodyOf(batch)["results"].size(), 2u);
  net::HttpResponse bare = Post("/v1/evaluate/batch", R"([{"attributes": {"id": "a"}}])");
  ASSERT_EQ(bare.status, 200) << bare.body;
  EXPECT_EQ(BodyOf(bare)["results"][0], BodyOf(batch)["results"][0]);

  net::HttpResponse too_many =
      Post("/v1/evaluate/batch", R"([{"attributes": {}}, {"attributes": {}},
                                                              {"attributes": {}}, {"attributes": {}}])");
  EXPECT_EQ(too_many.status, 413);
  EXPECT_EQ(BodyOf(too_many)["error"]["limit"], 3);

  net::HttpResponse bad_unit =
      Post("/v1/evaluate/batch", R"({"units": [{"attributes": {}}, {"attributes": 7}]})");
  EXPECT_EQ(bad_unit.status, 400);
  EXPECT_EQ(BodyOf(bad_unit)["error"]["field"], "units[1].attributes");
  EXPECT_EQ(BodyOf(Post("/v1/evaluate", R"({"attrs": {}})"))["error"]["field"], "attributes");
  EXPECT_EQ(Post("/v1/evaluate", "{").status, 400);
  EXPECT_EQ(Post("/v1/evaluate/batch", R"({"units": 1})").status, 400);
}

// Evaluations on worker threads while the watcher's thread swaps models in
// (and fails to build some): every answer comes from one whole good set.
// Run under the tsan preset for the races.
TEST_F(LayeredModelServiceTest, EvaluationsRunWhileModelsAreSwapped) {
  const std::string half = R"({"layer": "checkout", "state": "running", "coverage": 0.5,
      "variants": [{"id": "control"}, {"id": "green", "parameters": {"color": "green"}}]})";
  const std::string full = R"({"layer": "checkout", "state": "running", "coverage": 1,
      "variants": [{"id": "control"}, {"id": "green", "parameters": {"color": "green"}}]})";
  auto set = [&](const std::string& experiment, uint64_t generation) {
    return Documents({{"domains", "main", kDomain},
                      {"layers", "checkout", kLayer},
                      {"experiments", "e1", experiment}},
                     generation);
  };
  model_->OnSnapshot(set(half, 1));
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; !stop.load() || i < 50; ++i) {
        net::HttpResponse r =
            Post("/v1/evaluate/batch",
                 Json::array({Json{{"attributes", {{"id", "u" + std::to_string(t * 1000 + i)}}}},
                              Json{{"attributes", {{"id", "v" + std::to_string(i)}}}}})
                     .dump());
        Json body = Json::parse(r.body, nullptr, false);
        // Parameters always agree with the assignment: never half a model.
        for (const Json& result : body["results"]) {
          bool green =
              !result["assignments"].empty() && result["assignments"][0]["variant"] == "green";
          if (result["parameters"]["color"] != (green ? "green" : "blue")) ++wrong;
        }
        if (r.status != 200) ++wrong;
        ++answered;
        model_->StatusJson();
      }
    });
  }
  for (uint64_t g = 2; g < 200; ++g) {
    if (g % 3 == 0) {
      model_->OnSnapshot(  // does not build: the layer is gone
          Documents({{"domains", "main", kDomain}, {"experiments", "e1", half}}, g));
    } else {
      model_->OnSnapshot(set(g % 2 ? half : full, g));
    }
  }
  stop = true;
  for (std::thread& w : workers) w.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(answered.load(), 150);
  EXPECT_TRUE(model_->StatusJson()["ok"].get<bool>());
}

TEST_F(LayeredModelServiceTest, AnalyzeAnswersTheStatisticsEngine) {
  net::HttpResponse welch = Post("/v1/analyze", R"({"op": "welchTTest",
      "a": {"n": 1000, "mean": 10, "variance": 4}, "b": {"n": 1000, "mean": 10.3, "variance": 4}})");
  ASSERT_EQ(welch.status, 200) << welch.body;
  Json answer = BodyOf(welch);
  EXPECT_NEAR(answer["diff"].get<double>(), 0.3, 1e-12);
  EXPECT_LT(answer["p_value"].get<double>(), 0.001);

  net::HttpResponse missing =
      Post("/v1/analyze", R"({"op": "welchTTest", "a": {"n": 1000, "mean": 10, "variance": 4}})");
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(BodyOf(missing)["error"]["field"], "b");
  net::HttpResponse small = Post("/v1/analyze", R"({"op": "welchTTest",
      "a": {"n": 1, "mean": 10, "variance": 4}, "b": {"n": 1000, "mean": 10.3, "variance": 4}})");
  EXPECT_EQ(small.status, 400);
  EXPECT_EQ(BodyOf(small)["error"]["field"], "a.n");
  EXPECT_EQ(BodyOf(Post("/v1/analyze", R"({"op": "guess"})"))["error"]["field"], "op");
  EXPECT_EQ(Post("/v1/analyze", "[]").status, 400);
}

}  // namespace
}  // namespace capstan::experiments
