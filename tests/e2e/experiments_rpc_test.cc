// The experiments service's RPC API end to end: a real `capstan store` and
// `capstan experiments serve --rpc-listen --events-dir`, driven with the
// generated client (src/experiments_rpc/client.h) and, for the same calls,
// over HTTP: documents written over RPC are evaluated alike by both APIs
// (differential, unit by unit), errors carry the same messages naming the
// field, a stale revision is ABORTED, events ingested over RPC are counted
// once per idempotency key and read back as the HTTP API's results.
#include <sys/wait.h>

#include <csignal>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "experiments_rpc/client.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace capstan::e2e {
namespace {

using experiments::Json;
using experiments_rpc::ExperimentsRpcClient;
namespace v1 = experiments::v1;
using namespace std::chrono_literals;

// Unordered JSON: the typed answer's maps carry no key order.
nlohmann::json Plain(const Json& j) { return nlohmann::json::parse(j.dump()); }
Json JsonOf(const HttpAnswer& a) { return Json::parse(a.body, nullptr, false); }

class ExperimentsRpcE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("experiments_rpc");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    service_ = std::make_unique<Process>(
        std::vector<std::string>{CapstanBinary(), "experiments", "serve", "--store",
                                 store_->endpoint(), "--listen", "127.0.0.1:0", "--rpc-listen",
                                 "127.0.0.1:0", "--max-batch-units", "500", "--events-dir",
                                 dir_->path() + "/events"},
        dir_->path() + "/service.log");
    rpc_port_ = WaitForPrintedPort(*service_, "experiments rpc listening on port ");
    ASSERT_NE(rpc_port_, 0) << service_->Log();
    port_ = WaitForPrintedPort(*service_, "experiments listening on port ");
    ASSERT_NE(port_, 0) << service_->Log();
    ASSERT_TRUE(Eventually([&] { return HttpCall(port_, "GET", "/health").status == 200; }))
        << service_->Log();
    auto client = ExperimentsRpcClient::Connect("127.0.0.1", rpc_port_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    if (service_ != nullptr) {
      service_->Signal(SIGTERM);
      int status = service_->Wait(30s);
      EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                                                 << service_->Log();
    }
    if (store_ != nullptr) store_->Stop();
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  std::unique_ptr<ExperimentsRpcClient> client_;
  int port_ = 0;
  int rpc_port_ = 0;
};

const char kCtaVariants[] = R"("variants": [{"id": "control", "parameters": {"color": "blue"}},
                                           {"id": "green", "parameters": {"color": "green"}}])";

std::string Experiment(const std::string& fields) {
  return "{" + fields + ", " + kCtaVariants + "}";
}

std::string Attributes(int i) {
  return Json{{"id", "u" + std::to_string(i)}, {"country", i % 2 ? "NL" : "US"}}.dump();
}

TEST_F(ExperimentsRpcE2E, DocumentsAndEvaluationOverRpcAnswerAsHttpDoes) {
  auto domain = client_->Put("domains", "main", "{}", 0, "ann");
  ASSERT_TRUE(domain.ok()) << domain.status();
  EXPECT_TRUE(domain->created());
  EXPECT_EQ(domain->document().created_by(), "ann");
  ASSERT_TRUE(client_
                  ->Put("layers", "checkout", R"({"domain": "main", "parameters": {"color": "x"}})",
                        0, "ann")
                  .ok());
  // A flag naming an experiment that does not exist yet: the write check
  // refuses it, naming the field.
  const std::string banner = R"({"default_value": {"v": 1}, "rules": [
      {"type": "experiment", "experiment": "cta", "values": {"green": {"v": 2}}}]})";
  auto dangling = client_->Put("flags", "banner", banner, 0, "ann");
  EXPECT_EQ(dangling.status().code(), absl::StatusCode::kInvalidArgument) << dangling.status();
  EXPECT_EQ(dangling.status().message().substr(0, 9), "rules[0].") << dangling.status();

  // A validation error names the field, with the HTTP API's message.
  const std::string bad = Experiment(R"("layer": "checkout", "coverage": 1.5)");
  auto invalid = client_->Put("experiments", "cta", bad, 0, "ann");
  ASSERT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument) << invalid.status();
  EXPECT_EQ(invalid.status().message().substr(0, 10), "coverage: ") << invalid.status();
  HttpAnswer http_invalid = HttpCall(port_, "PUT", "/v1/experiments/cta", bad);
  EXPECT_EQ(http_invalid.status, 400);
  EXPECT_EQ(JsonOf(http_invalid)["error"]["message"], std::string(invalid.status().message()));
  EXPECT_EQ(JsonOf(http_invalid)["error"]["field"], "coverage");

  const std::string cta = Experiment(R"("layer": "checkout", "state": "running", "coverage": 0.5)");
  auto created = client_->Put("experiments", "cta", cta, 0, "ann");
  ASSERT_TRUE(created.ok()) << created.status();
  const int64_t revision = created->document().revision();
  ASSERT_GT(revision, 0);
  // The flag, now that its experiment exists (and whatever the first try did).
  auto flag = client_->Put("flags", "banner", banner, 0, "ann");
  ASSERT_TRUE(flag.ok()) << flag.status();

  // Revision conflicts: a create of an existing document, a stale replace.
  auto exists = client_->Put("experiments", "cta", cta, 0, "bob");
  EXPECT_EQ(exists.status().code(), absl::StatusCode::kAlreadyExists) << exists.status();
  auto stale = client_->Put("experiments", "cta", cta, revision - 1, "bob");
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted) << stale.status();
  EXPECT_NE(stale.status().message().find("is at revision " + std::to_string(revision)),
            std::string::npos)
      << stale.status();
  EXPECT_EQ(client_->Delete("experiments", "cta", revision - 1, "bob").code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(
      HttpCall(port_, "PUT", "/v1/experiments/cta?revision=" + std::to_string(revision - 1), cta)
          .status,
      409);

  // Reads: RPC and HTTP see the same document and history.
  auto got = client_->Get("experiments", "cta");
  ASSERT_TRUE(got.ok()) << got.status();
  Json http_doc = JsonOf(HttpCall(port_, "GET", "/v1/experiments/cta"));
  EXPECT_EQ(got->revision(), http_doc["revision"].get<int64_t>());
  EXPECT_EQ(got->version(), 1);
  EXPECT_EQ(Plain(Json::parse(got->spec_json())), Plain(http_doc["spec"]));
  EXPECT_EQ(client_->Get("experiments", "nope").status().code(), absl::StatusCode::kNotFound);
  auto layers = client_->List("layers");
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), 1u);
  EXPECT_EQ((*layers)[0].id(), "checkout");
  auto history = client_->History("experiments", "cta");
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ(Json::parse((*history)[0].record_json())["user"], "ann");

  // Evaluation: wait until the model serves cta, then compare unit by unit.
  std::vector<std::string> units;
  Json http_units = Json::array();
  for (int i = 0; i < 200; ++i) {
    units.push_back(Attributes(i));
    http_units.push_back({{"attributes", Json::parse(units.back())}});
  }
  absl::StatusOr<v1::EvaluateBatchResponse> batch;
  int in_cta = 0;
  ASSERT_TRUE(Eventually([&] {
    batch = client_->EvaluateBatch(units);
    in_cta = 0;
    if (!batch.ok()) return false;
    for (const auto& r : batch->results()) {
      for (const auto& a : r.assignments()) in_cta += a.experiment() == "cta" ? 1 : 0;
    }
    return in_cta > 0 && batch->results(0).flags().contains("banner");
  })) << (batch.ok() ? "" : batch.status().ToString())
      << service_->Log();
  EXPECT_GT(in_cta, 60);  // coverage 0.5 of 200
  EXPECT_LT(in_cta, 140);
  Json http_batch =
      JsonOf(HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", http_units}}.dump()));
  ASSERT_EQ(http_batch["results"].size(), units.size()) << http_batch.dump();
  EXPECT_EQ(batch->generation(), http_batch["generation"].get<uint64_t>());
  int flag_experiment = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    EXPECT_EQ(Plain(experiments_rpc::UnitResultToJson(batch->results(static_cast<int>(i)))),
              Plain(http_batch["results"][i]))
        << i;
    flag_experiment += batch->results(static_cast<int>(i)).flags().at("banner").source() ==
                       v1::FLAG_SOURCE_EXPERIMENT;
  }
  EXPECT_GT(flag_experiment, 0);
  for (int i : {0, 7, 199}) {
    auto one = client_->Evaluate(units[i]);
    ASSERT_TRUE(one.ok()) << one.status();
    HttpAnswer http_one =
        HttpCall(port_, "POST", "/v1/evaluate", Json{{"attributes", Json::parse(units[i])}}.dump());
    ASSERT_EQ(http_one.status, 200) << http_one.body;
    Json expected = JsonOf(http_one);
    EXPECT_EQ(one->generation(), expected["generation"].get<uint64_t>());
    expected.erase("generation");
    EXPECT_EQ(Plain(experiments_rpc::UnitResultToJson(one->result())), Plain(expected)) << i;
  }

  // Evaluation errors name the field.
  auto not_object = client_->Evaluate("[1, 2]");
  EXPECT_EQ(not_object.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(not_object.status().message(), "attributes_json: must be an object");
  std::vector<std::string> with_bad = {Attributes(0), Attributes(1), Attributes(2), "{nope"};
  auto bad_unit = client_->EvaluateBatch(with_bad);
  EXPECT_EQ(bad_unit.status().message(), "attributes_json[3]: is not valid JSON");
  std::vector<std::string> too_many(501, Attributes(1));
  auto over = client_->EvaluateBatch(too_many);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(), "attributes_json: 501 units in one batch; at most 500");

  // Analysis: the same answer and the same field-naming error as POST /v1/analyze.
  const std::string welch =
      R"({"op": "welchTTest", "a": {"n": 100, "mean": 1, "variance": 1},
          "b": {"n": 100, "mean": 1.3, "variance": 1.2}})";
  auto analysis = client_->Analyze(welch);
  ASSERT_TRUE(analysis.ok()) << analysis.status();
  HttpAnswer http_analysis = HttpCall(port_, "POST", "/v1/analyze", welch);
  ASSERT_EQ(http_analysis.status, 200) << http_analysis.body;
  EXPECT_EQ(Plain(*analysis), Plain(JsonOf(http_analysis)));
  EXPECT_TRUE(analysis->contains("p_value")) << analysis->dump();
  const std::string bad_n = R"({"op": "welchTTest", "a": {"n": 1, "mean": 1, "variance": 1},
                                "b": {"n": 100, "mean": 1.3, "variance": 1.2}})";
  auto bad_analysis = client_->Analyze(bad_n);
  EXPECT_EQ(bad_analysis.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JsonOf(HttpCall(port_, "POST", "/v1/analyze", bad_n))["error"]["message"],
            std::string(bad_analysis.status().message()));

  auto status = client_->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->model().ok());
  EXPECT_EQ(status->model().experiments(), 1u);
  Json http_status = JsonOf(HttpCall(port_, "GET", "/v1/status"))["model"];
  EXPECT_EQ(status->model().revision(), http_status["revision"].get<int64_t>());
  EXPECT_EQ(status->model().generation(), http_status["generation"].get<uint64_t>());
  EXPECT_GT(status->model().revision(), 0);
  EXPECT_TRUE(status->events().enabled());

  // Deleting: a running experiment is refused with the write check's message.
  auto running = client_->Delete("experiments", "cta", 0, "ann");
  EXPECT_EQ(running.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(running.message().substr(0, 7), "state: ") << running;
}

v1::Event Exposure(const std::string& unit, const std::string& variant) {
  v1::Event e;
  e.set_key("x-" + unit);
  e.set_experiment("checkout");
  e.set_unit(unit);
  e.set_timestamp_ms(1700000000000);
  e.mutable_exposure()->set_variant(variant);
  return e;
}

v1::Event Clicks(const std::string& unit, double value) {
  v1::Event e;
  e.set_key("v-" + unit);
  e.set_experiment("checkout");
  e.set_unit(unit);
  e.set_timestamp_ms(1700000000001);
  e.mutable_value()->set_metric("clicks");
  e.mutable_value()->set_value(value);
  return e;
}

// The lifecycle over RPC (ChangeLifecycle) and HTTP (POST
// /v1/experiments/{id}/{action}): the same checks as a PUT (illegal
// transitions and a shrinking ramp name their field, a stale revision is a
// conflict), and every step lands in the history with who made it.
TEST_F(ExperimentsRpcE2E, TheLifecycleOverRpcAndHttpChecksAsAPutDoes) {
  ASSERT_TRUE(client_->Put("domains", "main", "{}", 0, "ann").ok());
  ASSERT_TRUE(client_
                  ->Put("layers", "checkout", R"({"domain": "main", "parameters": {"color": "x"}})",
                        0, "ann")
                  .ok());
  auto draft = client_->Put("experiments", "cta",
                            Experiment(R"("layer": "checkout", "coverage": 0.2)"), 0, "ann");
  ASSERT_TRUE(draft.ok()) << draft.status();
  auto step = [&](v1::ChangeLifecycleRequest::Action action, double coverage = 0,
                  std::string variant = "", int64_t revision = 0) {
    v1::ChangeLifecycleRequest request;
    request.set_id("cta");
    request.set_action(action);
    request.set_coverage(coverage);
    request.set_launched_variant(variant);
    request.set_expected_revision(revision);
    request.set_user("rita");
    return client_->ChangeLifecycle(request);
  };
  // Stop before it ran: draft -> stopped is not a transition.
  auto early_stop = step(v1::ChangeLifecycleRequest::STOP);
  ASSERT_EQ(early_stop.status().code(), absl::StatusCode::kInvalidArgument) << early_stop.status();
  EXPECT_EQ(early_stop.status().message().substr(0, 7), "state: ") << early_stop.status();
  auto started = step(v1::ChangeLifecycleRequest::START);
  ASSERT_TRUE(started.ok()) << started.status();
  Json spec = Json::parse(started->document().spec_json());
  EXPECT_EQ(spec["state"], "running");
  EXPECT_EQ(started->document().updated_by(), "rita");
  // Ramp up, then a ramp down is refused naming coverage; a stale revision conflicts.
  auto ramped = step(v1::ChangeLifecycleRequest::RAMP, 0.6);
  ASSERT_TRUE(ramped.ok()) << ramped.status();
  EXPECT_EQ(Json::parse(ramped->document().spec_json())["coverage"], 0.6);
  auto shrink = step(v1::ChangeLifecycleRequest::RAMP, 0.3);
  ASSERT_EQ(shrink.status().code(), absl::StatusCode::kInvalidArgument) << shrink.status();
  EXPECT_EQ(shrink.status().message().substr(0, 10), "coverage: ") << shrink.status();
  auto stale = step(v1::ChangeLifecycleRequest::RAMP, 0.9, "", started->document().revision());
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted) << stale.status();
  EXPECT_EQ(step(v1::ChangeLifecycleRequest::ACTION_UNSPECIFIED).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto no_variant = step(v1::ChangeLifecycleRequest::LAUNCH);
  EXPECT_EQ(no_variant.status().message().substr(0, 18), "launched_variant: ")
      << no_variant.status();

  // The same over HTTP: the message and field as the RPC's.
  HttpAnswer http_shrink =
      HttpCall(port_, "POST", "/v1/experiments/cta/ramp", R"({"coverage": 0.3})");
  EXPECT_EQ(http_shrink.status, 400);
  EXPECT_EQ(JsonOf(http_shrink)["error"]["field"], "coverage") << http_shrink.body;
  EXPECT_EQ(JsonOf(http_shrink)["error"]["message"], std::string(shrink.status().message()));
  EXPECT_EQ(HttpCall(port_, "POST", "/v1/experiments/cta/pause", "{}").status, 404);
  EXPECT_EQ(HttpCall(port_, "POST", "/v1/experiments/ghost/start", "{}").status, 404);
  HttpAnswer stopped =
      HttpCall(port_, "POST", "/v1/experiments/cta/stop", "", {"X-Capstan-User: sam"});
  ASSERT_EQ(stopped.status, 200) << stopped.body;
  EXPECT_EQ(JsonOf(stopped)["spec"]["state"], "stopped");
  HttpAnswer launched = HttpCall(port_, "POST", "/v1/experiments/cta/launch",
                                 R"({"launched_variant": "green"})", {"X-Capstan-User: sam"});
  ASSERT_EQ(launched.status, 200) << launched.body;
  EXPECT_EQ(JsonOf(launched)["spec"]["launched_variant"], "green");
  EXPECT_EQ(step(v1::ChangeLifecycleRequest::START).status().code(),
            absl::StatusCode::kInvalidArgument);  // nothing leaves launched

  // Every step, who and when, in the lifecycle read from the history.
  Json lifecycle = JsonOf(HttpCall(port_, "GET", "/v1/experiments/cta/lifecycle"));
  ASSERT_TRUE(lifecycle.is_object()) << lifecycle;
  EXPECT_EQ(lifecycle["state"], "launched");
  std::vector<std::string> moves;
  for (const Json& t : lifecycle["transitions"]) {
    std::string from = t["from"].is_string() ? t["from"].get<std::string>() : "-";
    moves.push_back(from + ">" + t["to"].get<std::string>() + " by " + t["by"].get<std::string>());
  }
  EXPECT_EQ(moves, (std::vector<std::string>{"->draft by ann", "draft>running by rita",
                                             "running>stopped by sam", "stopped>launched by sam"}))
      << lifecycle.dump();
}

TEST_F(ExperimentsRpcE2E, EventsIngestedOverRpcAreCountedOnceAndReadAsResults) {
  // Units u0..u99: half control, half treatment; clicks 1 (control) or 2.
  v1::IngestEventsRequest first, second;
  for (int i = 0; i < 100; ++i) {
    std::string unit = "u" + std::to_string(i);
    bool treated = i % 2 == 1;
    v1::IngestEventsRequest& into = i < 60 ? first : second;
    *into.add_events() = Exposure(unit, treated ? "treatment" : "control");
    *into.add_events() = Clicks(unit, treated ? 2 + (i % 7) * 0.1 : 1 + (i % 5) * 0.1);
  }
  // The second batch repeats the first's last ten units: those are duplicates.
  for (int i = 50; i < 60; ++i) {
    *second.add_events() = first.events(2 * i);
    *second.add_events() = first.events(2 * i + 1);
  }
  auto a = client_->IngestEvents(first);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->accepted(), 120u);
  EXPECT_EQ(a->duplicates(), 0u);
  auto b = client_->IngestEvents(second);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->accepted(), 80u);
  EXPECT_EQ(b->duplicates(), 20u);
  auto again = client_->IngestEvents(first);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->accepted(), 0u);
  EXPECT_EQ(again->duplicates(), 120u);

  // A bad event refuses the whole batch, naming the event and the field.
  v1::IngestEventsRequest bad;
  *bad.add_events() = Exposure("u1000", "control");
  *bad.add_events() = Clicks("", 1);
  auto refused = client_->IngestEvents(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(), "events[1].unit: must be 1 to 128 bytes");

  // Results: an experiment known from its events only, then defined in the
  // layered model (its variants and control read from the definition): RPC
  // and HTTP answer the same document both times.
  v1::GetResultsRequest query;
  query.set_experiment("checkout");
  auto from_events = client_->Results(query);
  ASSERT_TRUE(from_events.ok()) << from_events.status();
  EXPECT_EQ((*from_events)["source"], "events") << from_events->dump();
  EXPECT_EQ(Plain(*from_events),
            Plain(JsonOf(HttpCall(port_, "GET", "/v1/experiments/checkout/results"))));
  ASSERT_TRUE(client_->Put("domains", "main", "{}", 0, "ann").ok());
  ASSERT_TRUE(client_->Put("layers", "l", R"({"domain": "main"})", 0, "ann").ok());
  ASSERT_TRUE(client_
                  ->Put("experiments", "checkout", R"({"layer": "l", "state": "running",
                  "variants": [{"id": "treatment"}, {"id": "control"}],
                  "analysis": {"control": "control"}})",
                        0, "ann")
                  .ok());
  absl::StatusOr<Json> results;
  ASSERT_TRUE(Eventually([&] {
    results = client_->Results(query);
    return results.ok() && (*results)["source"] == "model";
  })) << (results.ok() ? results->dump() : results.status().ToString());
  HttpAnswer http = HttpCall(port_, "GET", "/v1/experiments/checkout/results");
  ASSERT_EQ(http.status, 200) << http.body;
  EXPECT_EQ(Plain(*results), Plain(JsonOf(http)));
  query.set_correction("bh");
  query.set_method("sequential");
  auto overridden = client_->Results(query);
  ASSERT_TRUE(overridden.ok()) << overridden.status();
  EXPECT_EQ(Plain(*overridden),
            Plain(JsonOf(HttpCall(
                port_, "GET", "/v1/experiments/checkout/results?correction=bh&sequential=true"))));
  EXPECT_EQ((*overridden)["method"], "sequential");
  query.set_correction("");
  query.set_method("");
  std::map<std::string, uint64_t> units;
  for (const Json& v : (*results)["variants"]) units[v["variant"]] = v["units"].get<uint64_t>();
  EXPECT_EQ(units, (std::map<std::string, uint64_t>{{"control", 50}, {"treatment", 50}}))
      << results->dump();
  ASSERT_EQ((*results)["metrics"].size(), 1u) << results->dump();
  for (const Json& v : (*results)["metrics"][0]["variants"]) {
    EXPECT_EQ(v["n"].get<uint64_t>(), 50u) << v.dump();
  }
  query.set_alpha(2);
  auto bad_alpha = client_->Results(query);
  EXPECT_EQ(bad_alpha.status().code(), absl::StatusCode::kInvalidArgument) << bad_alpha.status();

  auto status = client_->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->events().log_sequence(), 200u);
  EXPECT_EQ(status->events().accepted(), 200u);
  EXPECT_EQ(status->events().duplicates(), 140u);
}

}  // namespace
}  // namespace capstan::e2e
