// `capstan experiments serve` against a real `capstan store`, driven over
// HTTP: the document API (create, replace with a revision, validation that
// names the field, 409 on concurrent edits, delete, history), a feature
// update reaching subscribed evaluators by watch (the propagation time is
// printed, not asserted), and the unmodified npm GrowthBook SDK pointed at
// the service (GET /api/features, an encrypted connection, and remote
// evaluation through POST /api/eval); the layered model served from the
// store (write-time checks, evaluation matching the in-process Assigner, a
// ramp that keeps assigned units, a bad set that never replaces a good one,
// /v1/analyze; the propagation time printed, not asserted). Streaming
// (GET /sub/{clientKey}) is in experiments_streaming_test.cc.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "experiments/assigner.h"
#include "experiments/config_store.h"
#include "experiments/growthbook_service.h"
#include "experiments/model_service.h"
#include "experiments/service.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using experiments::Json;
using namespace std::chrono_literals;

Json JsonOf(const HttpAnswer& a) { return Json::parse(a.body, nullptr, false); }

class ExperimentsServiceE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("experiments_service");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    service_ = std::make_unique<Process>(
        std::vector<std::string>{CapstanBinary(), "experiments", "serve", "--store",
                                 store_->endpoint(), "--listen", "127.0.0.1:0", "--max-body-bytes",
                                 "65536", "--max-batch-units", "500"},
        dir_->path() + "/service.log");
    port_ = WaitForPrintedPort(*service_, "experiments listening on port ");
    ASSERT_NE(port_, 0) << service_->Log();
    ASSERT_TRUE(Eventually([&] { return HttpCall(port_, "GET", "/health").status == 200; }))
        << service_->Log();
    auto client = client::Client::Connect({.endpoints = {store_->endpoint()}});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(client).value();
  }

  void TearDown() override {
    if (service_ != nullptr) {
      service_->Signal(SIGTERM);
      int status = service_->Wait(30s);
      EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                                                 << service_->Log();
    }
    client_.reset();
    if (store_ != nullptr) store_->Stop();
  }

  HttpAnswer Put(const std::string& path, const std::string& body,
                 const std::vector<std::string>& headers = {}) {
    return HttpCall(port_, "PUT", path, body, headers);
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  std::shared_ptr<client::Client> client_;
  int port_ = 0;
};

TEST_F(ExperimentsServiceE2E, DocumentsAreCreatedReplacedValidatedDeletedAndKeptInHistory) {
  HttpAnswer created =
      Put("/v1/features/banner", R"({"defaultValue": "blue"})", {"X-Capstan-User: ann"});
  ASSERT_EQ(created.status, 201) << created.body;
  Json doc = JsonOf(created);
  EXPECT_EQ(doc["version"], 1);
  EXPECT_EQ(doc["createdBy"], "ann");
  int64_t revision = doc["revision"].get<int64_t>();

  HttpAnswer got = HttpCall(port_, "GET", "/v1/features/banner");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(JsonOf(got)["spec"]["defaultValue"], "blue");
  EXPECT_NE(got.head.find("ETag: \"" + std::to_string(revision) + "\""), std::string::npos)
      << got.head;
  EXPECT_NE(got.head.find("Access-Control-Allow-Origin: *"), std::string::npos);

  // No revision: create only; the answer says what the revision is now.
  HttpAnswer again = Put("/v1/features/banner", R"({"defaultValue": "red"})");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(JsonOf(again)["error"]["currentRevision"], revision);

  HttpAnswer replaced = Put("/v1/features/banner?revision=" + std::to_string(revision),
                            R"({"defaultValue": "red"})", {"X-Capstan-User: bob"});
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  EXPECT_EQ(JsonOf(replaced)["version"], 2);
  EXPECT_EQ(JsonOf(replaced)["createdBy"], "ann");
  int64_t second = JsonOf(replaced)["revision"].get<int64_t>();
  // The stale revision, now through If-Match.
  EXPECT_EQ(Put("/v1/features/banner", R"({"defaultValue": "x"})",
                {"If-Match: \"" + std::to_string(revision) + "\""})
                .status,
            409);

  HttpAnswer invalid =
      Put("/v1/features/broken",
          R"({"defaultValue": 1, "rules": [{"force": 2}, {"force": 3, "coverage": "most"}]})");
  EXPECT_EQ(invalid.status, 400);
  EXPECT_EQ(JsonOf(invalid)["error"]["field"], "rules[1].coverage") << invalid.body;
  EXPECT_EQ(Put("/v1/features/broken", "{not json").status, 400);
  EXPECT_EQ(Put("/v1/unknown-kind/x", "{}").status, 400);
  EXPECT_EQ(Put("/v1/features/a%2Fb", "{}").status, 400);  // ids hold no '/'
  EXPECT_EQ(
      Put("/v1/features/big", R"({"defaultValue": ")" + std::string(70000, 'x') + "\"}").status,
      413);
  EXPECT_EQ(HttpCall(port_, "PATCH", "/v1/features/banner").status, 405);

  HttpAnswer listed = HttpCall(port_, "GET", "/v1/features");
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(JsonOf(listed)["items"].size(), 1u);

  EXPECT_EQ(
      HttpCall(port_, "DELETE", "/v1/features/banner?revision=" + std::to_string(revision)).status,
      409);
  EXPECT_EQ(HttpCall(port_, "DELETE", "/v1/features/banner?revision=" + std::to_string(second), "",
                     {"X-Capstan-User: cy"})
                .status,
            200);
  EXPECT_EQ(HttpCall(port_, "GET", "/v1/features/banner").status, 404);

  HttpAnswer history = HttpCall(port_, "GET", "/v1/features/banner/history");
  ASSERT_EQ(history.status, 200);
  Json items = JsonOf(history)["items"];
  ASSERT_EQ(items.size(), 3u) << history.body;
  EXPECT_EQ(items[0]["op"], "create");
  EXPECT_EQ(items[0]["user"], "ann");
  EXPECT_EQ(items[1]["op"], "update");
  EXPECT_EQ(items[1]["user"], "bob");
  EXPECT_EQ(items[1]["document"]["spec"]["defaultValue"], "red");
  EXPECT_EQ(items[2]["op"], "delete");
  EXPECT_EQ(items[2]["user"], "cy");
  EXPECT_TRUE(items[2]["document"].is_null());
  EXPECT_FALSE(items[0]["at"].get<std::string>().empty());
}

// Writers that read the same revision race; the compare in the Txn lets
// exactly one win, over HTTP and through the repository alike.
TEST_F(ExperimentsServiceE2E, ConcurrentUpdatesFromOneRevisionConflict) {
  HttpAnswer created = Put("/v1/features/race", R"({"defaultValue": 0})");
  ASSERT_EQ(created.status, 201);
  int64_t revision = JsonOf(created)["revision"].get<int64_t>();

  constexpr int kWriters = 8;
  std::vector<HttpAnswer> answers(kWriters);
  {
    std::vector<std::thread> writers;
    for (int i = 0; i < kWriters; ++i) {
      writers.emplace_back([&, i] {
        answers[i] = Put("/v1/features/race?revision=" + std::to_string(revision),
                         R"({"defaultValue": )" + std::to_string(i + 1) + "}");
      });
    }
    for (std::thread& t : writers) t.join();
  }
  int won = 0, conflicts = 0;
  int64_t winner_revision = 0;
  for (const HttpAnswer& a : answers) {
    if (a.status == 200) {
      ++won;
      winner_revision = JsonOf(a)["revision"].get<int64_t>();
    } else if (a.status == 409) {
      ++conflicts;
    }
  }
  EXPECT_EQ(won, 1);
  EXPECT_EQ(conflicts, kWriters - 1);
  for (const HttpAnswer& a : answers) {
    if (a.status == 409) {
      int64_t current = JsonOf(a)["error"]["currentRevision"].get<int64_t>();
      // Either the loser read before the winner wrote (the Txn's compare
      // failed) or after (the pre-check saw the new revision).
      EXPECT_TRUE(current == winner_revision || current == revision) << a.body;
    }
  }
  std::cout << "concurrent writers from one revision: " << won << " won, " << conflicts
            << " got 409\n";

  // The repository directly: the same race, with ABORTED and the revision.
  experiments::ConfigStore repo(client_);
  experiments::RegisterGrowthBookKinds(&repo);
  auto current = repo.Get("features", "race");
  ASSERT_TRUE(current.ok()) << current.status();
  std::vector<absl::Status> results(kWriters);
  {
    std::vector<std::thread> writers;
    for (int i = 0; i < kWriters; ++i) {
      writers.emplace_back([&, i] {
        results[i] =
            repo.Put("features", "race", Json{{"defaultValue", 100 + i}}, current->revision, "t")
                .status();
      });
    }
    for (std::thread& t : writers) t.join();
  }
  int ok = 0;
  for (const absl::Status& st : results) {
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_TRUE(st.code() == absl::StatusCode::kAborted) << st;
      EXPECT_TRUE(experiments::CurrentRevisionOf(st).has_value()) << st;
    }
  }
  EXPECT_EQ(ok, 1);
  // Every accepted change is in the history: create + one HTTP winner + one repository winner.
  auto history = repo.History("features", "race");
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->size(), 3u);
}

// A subscribed evaluator: a ConfigWatcher of its own (as another service
// instance or an SDK process would have) feeding GrowthBookEndpoints; it
// records when each version of "flag" first evaluates.
class WatchingEvaluator {
 public:
  explicit WatchingEvaluator(std::shared_ptr<client::Client> client)
      : watcher_(experiments::ConfigWatcher::Start(std::move(client))) {
    watcher_->Subscribe([this](const std::shared_ptr<const experiments::DocumentSnapshot>& s) {
      endpoints_.OnSnapshot(s);
      auto gb = endpoints_.ClientFor("sdk-watch");
      if (gb == nullptr) return;
      absl::StatusOr<Json> result = gb->EvalFeature("flag", Json{{"attributes", Json::object()}});
      if (!result.ok() || !(*result)["value"].is_number_integer()) return;
      std::lock_guard lock(mu_);
      seen_value_ = (*result)["value"].get<int>();
      seen_at_ = std::chrono::steady_clock::now();
      cv_.notify_all();
    });
  }
  // When value `v` was first evaluated (waits up to 10 s); nullopt on timeout.
  std::optional<std::chrono::steady_clock::time_point> WaitFor(int v) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return seen_value_ == v; })) return std::nullopt;
    return seen_at_;
  }

 private:
  experiments::GrowthBookEndpoints endpoints_;
  std::mutex mu_;
  std::condition_variable cv_;
  int seen_value_ = -1;
  std::chrono::steady_clock::time_point seen_at_;
  std::unique_ptr<experiments::ConfigWatcher> watcher_;  // last: stopped first
};

TEST_F(ExperimentsServiceE2E, AFeatureUpdateReachesEverySubscribedEvaluator) {
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-watch", "{}").status, 201);
  HttpAnswer created = Put("/v1/features/flag", R"({"defaultValue": 0})");
  ASSERT_EQ(created.status, 201);
  int64_t revision = JsonOf(created)["revision"].get<int64_t>();
  constexpr int kEvaluators = 3;
  std::vector<std::unique_ptr<WatchingEvaluator>> evaluators;
  for (int i = 0; i < kEvaluators; ++i) {
    auto client = client::Client::Connect({.endpoints = {store_->endpoint()}});
    ASSERT_TRUE(client.ok());
    evaluators.push_back(std::make_unique<WatchingEvaluator>(std::move(client).value()));
    ASSERT_TRUE(evaluators.back()->WaitFor(0).has_value());
  }
  constexpr int kUpdates = 30;
  std::vector<double> write_ms, all_ms;  // API write answered; every evaluator updated
  for (int v = 1; v <= kUpdates; ++v) {
    auto start = std::chrono::steady_clock::now();
    HttpAnswer put = Put("/v1/features/flag?revision=" + std::to_string(revision),
                         R"({"defaultValue": )" + std::to_string(v) + "}");
    ASSERT_EQ(put.status, 200) << put.body;
    revision = JsonOf(put)["revision"].get<int64_t>();
    write_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    auto last = start;
    for (auto& evaluator : evaluators) {
      std::optional<std::chrono::steady_clock::time_point> at = evaluator->WaitFor(v);
      ASSERT_TRUE(at.has_value()) << "update " << v << " never arrived";
      last = std::max(last, *at);
    }
    all_ms.push_back(std::chrono::duration<double, std::milli>(last - start).count());
  }
  // The service's own SDK endpoint serves the last value too.
  ASSERT_TRUE(Eventually([&] {
    Json payload = JsonOf(HttpCall(port_, "GET", "/api/features/sdk-watch"));
    return payload.is_object() && payload["features"]["flag"]["defaultValue"] == kUpdates;
  }));
  // Unchanged since the client's copy: 304, no body.
  HttpAnswer served = HttpCall(port_, "GET", "/api/features/sdk-watch");
  size_t etag_at = served.head.find("ETag: ");
  ASSERT_NE(etag_at, std::string::npos) << served.head;
  std::string etag =
      served.head.substr(etag_at + 6, served.head.find("\r\n", etag_at) - etag_at - 6);
  HttpAnswer not_modified =
      HttpCall(port_, "GET", "/api/features/sdk-watch", "", {"If-None-Match: " + etag});
  EXPECT_EQ(not_modified.status, 304) << not_modified.head;
  EXPECT_TRUE(not_modified.body.empty());
  auto percentile = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
  };
  std::printf(
      "propagation, API write (PUT) -> %d subscribed evaluators updated, %d updates: "
      "p50 %.2f ms, p99 %.2f ms, max %.2f ms (the PUT alone: p50 %.2f ms)\n",
      kEvaluators, kUpdates, percentile(all_ms, 0.5), percentile(all_ms, 0.99),
      percentile(all_ms, 1.0), percentile(write_ms, 0.5));
  RecordProperty("propagation_p50_ms", std::to_string(percentile(all_ms, 0.5)));
  RecordProperty("propagation_p99_ms", std::to_string(percentile(all_ms, 0.99)));
}

// The watcher's view follows puts and deletes made with any client; a value
// that is not a JSON object is skipped, a bare spec (no envelope) is read.
TEST_F(ExperimentsServiceE2E, TheWatcherFollowsTheStoreAndSkipsBadDocuments) {
  const std::string prefix = "/capstan/experiments/config/";
  ASSERT_TRUE(client_->Put(prefix + "features/bare", R"({"defaultValue": true})").ok());
  ASSERT_TRUE(client_->Put(prefix + "features/garbage", "not json").ok());
  auto watcher = experiments::ConfigWatcher::Start(client_);
  ASSERT_TRUE(watcher->WaitUntilListed(10s));
  std::mutex mu;
  std::condition_variable cv;
  std::shared_ptr<const experiments::DocumentSnapshot> last;
  uint64_t id =
      watcher->Subscribe([&](const std::shared_ptr<const experiments::DocumentSnapshot>& s) {
        std::lock_guard lock(mu);
        last = s;
        cv.notify_all();
      });
  auto wait_until = [&](const std::function<bool(const experiments::DocumentSnapshot&)>& cond) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] { return last != nullptr && cond(*last); });
  };
  ASSERT_TRUE(wait_until([](const experiments::DocumentSnapshot& s) {
    return s.Find("features", "bare") != nullptr;
  }));
  EXPECT_EQ(watcher->snapshot()->Find("features", "garbage"), nullptr);
  EXPECT_EQ(watcher->snapshot()->Find("features", "bare")->version, 0);

  ASSERT_EQ(Put("/v1/features/api", R"({"defaultValue": 2})", {"X-Capstan-User: ann"}).status, 201);
  ASSERT_TRUE(wait_until([](const experiments::DocumentSnapshot& s) {
    const experiments::ConfigDocument* doc = s.Find("features", "api");
    return doc != nullptr && doc->updated_by == "ann" && doc->version == 1;
  }));
  ASSERT_TRUE(client_->Delete(prefix + "features/bare").ok());
  ASSERT_TRUE(wait_until([](const experiments::DocumentSnapshot& s) {
    return s.Find("features", "bare") == nullptr && s.Find("features", "api") != nullptr;
  }));
  // History records are kept apart from the watched documents.
  EXPECT_EQ(watcher->snapshot()->Of("history").size(), 0u);
  watcher->Unsubscribe(id);
}

// The extension point the layered model plugs into: a kind with its
// validator, a subscriber and a route, on an in-process service.
TEST_F(ExperimentsServiceE2E, ExtensionsAddKindsAndRoutes) {
  std::atomic<size_t> layers_seen{0};
  experiments::ServiceOptions options;
  options.store_endpoints = {store_->endpoint()};
  options.listen_port = 0;
  options.prefix = "/capstan/experiments-ext/";
  options.layered_model = false;  // its "layers" kind is the model's otherwise
  options.extensions.push_back([&](const experiments::ServiceContext& context) {
    context.store->RegisterKind("layers", [](const std::string&, const Json& spec) {
      if (!spec.contains("salt") || !spec["salt"].is_string()) {
        return absl::InvalidArgumentError("salt: must be a string");
      }
      return absl::OkStatus();
    });
    context.watcher->Subscribe([&](const std::shared_ptr<const experiments::DocumentSnapshot>& s) {
      layers_seen = s->Of("layers").size();
    });
    context.router->Add("GET", "/v1/layers-count",
                        [&](const net::HttpRequest&, const net::PathParams&) {
                          return net::JsonResponse(200, std::to_string(layers_seen.load()));
                        });
    return absl::OkStatus();
  });
  auto service = experiments::ExperimentsService::Start(std::move(options));
  ASSERT_TRUE(service.ok()) << service.status();
  int port = (*service)->port();
  HttpAnswer invalid = HttpCall(port, "PUT", "/v1/layers/checkout", R"({"salt": 1})");
  EXPECT_EQ(invalid.status, 400);
  EXPECT_EQ(JsonOf(invalid)["error"]["field"], "salt");
  EXPECT_EQ(HttpCall(port, "PUT", "/v1/layers/checkout", R"({"salt": "s1"})").status, 201);
  EXPECT_TRUE(Eventually([&] { return HttpCall(port, "GET", "/v1/layers-count").body == "1\n"; }));
  EXPECT_EQ(HttpCall(port, "GET", "/v1/layers/checkout/history").status, 200);
  // The other service (another prefix) does not see it.
  EXPECT_EQ(HttpCall(port_, "GET", "/v1/layers/checkout").status, 404);  // the model's kind there
}

// --- The layered model (model_service.h) ---

const char kCtaVariants[] = R"("variants": [{"id": "control", "parameters": {"color": "blue"}},
                                           {"id": "green", "parameters": {"color": "green"}}])";

std::string Experiment(const std::string& fields) {
  return "{" + fields + ", " + kCtaVariants + "}";
}

// {"units": [{"attributes": {"id": "u<i>", "country": ...}}, ...]}
Json Units(int count) {
  Json units = Json::array();
  for (int i = 0; i < count; ++i) {
    units.push_back(
        {{"attributes", {{"id", "u" + std::to_string(i)}, {"country", i % 2 ? "NL" : "US"}}}});
  }
  return units;
}

// unit id -> variant of experiment `experiment` (absent: not in it).
std::map<std::string, std::string> VariantsOf(const Json& results, const std::string& experiment) {
  std::map<std::string, std::string> out;
  for (const Json& result : results) {
    for (const Json& a : result["assignments"]) {
      if (a["experiment"] == experiment && a.contains("variant")) out[a["unit"]] = a["variant"];
    }
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

TEST_F(ExperimentsServiceE2E, TheLayeredModelIsWrittenCheckedAndEvaluated) {
  const std::string layer_spec = R"({"domain": "main", "parameters": {"color": "blue"}})";
  ASSERT_EQ(Put("/v1/domains/main", "{}").status, 201);
  ASSERT_EQ(Put("/v1/layers/checkout", layer_spec).status, 201);

  // Refused at write time: a dangling reference, a bad field, a bad id.
  HttpAnswer dangling =
      Put("/v1/experiments/ghost", Experiment(R"("layer": "nowhere", "state": "running")"));
  EXPECT_EQ(dangling.status, 400) << dangling.body;
  EXPECT_EQ(JsonOf(dangling)["error"]["field"], "layer") << dangling.body;
  HttpAnswer coverage =
      Put("/v1/experiments/cta", Experiment(R"("layer": "checkout", "coverage": 1.5)"));
  EXPECT_EQ(coverage.status, 400);
  EXPECT_EQ(JsonOf(coverage)["error"]["field"], "coverage") << coverage.body;
  EXPECT_EQ(Put("/v1/layers/a:b", layer_spec).status, 400);

  const std::string cta_fields = R"("layer": "checkout", "state": "running", "coverage": 0.5)";
  auto before_create = std::chrono::steady_clock::now();
  HttpAnswer created = Put("/v1/experiments/cta", Experiment(cta_fields));
  ASSERT_EQ(created.status, 201) << created.body;
  int64_t revision = JsonOf(created)["revision"].get<int64_t>();

  // Evaluate sees the experiment (units u0..u199 by batch).
  const Json units = Units(200);
  Json batch;
  ASSERT_TRUE(Eventually([&] {
    batch = JsonOf(HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", units}}.dump()));
    return batch.is_object() && !VariantsOf(batch["results"], "cta").empty();
  })) << batch.dump()
      << service_->Log();
  double create_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - before_create)
          .count();
  std::map<std::string, std::string> at_half = VariantsOf(batch["results"], "cta");
  // About half the units (coverage 0.5), both variants.
  EXPECT_GT(at_half.size(), 60u);
  EXPECT_LT(at_half.size(), 140u);

  // Deterministic: the same answers again, and one unit alone answers as in the batch.
  Json again = JsonOf(HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", units}}.dump()));
  EXPECT_EQ(again["results"], batch["results"]);
  HttpAnswer one = HttpCall(port_, "POST", "/v1/evaluate", units[7].dump());
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(JsonOf(one)["assignments"], batch["results"][7]["assignments"]);

  // The in-process Assigner over the same documents assigns every unit alike.
  std::vector<experiments::ModelDocument> documents;
  for (auto [kind, id, spec] :
       {std::tuple{experiments::DocumentKind::kDomain, "main", std::string("{}")},
        std::tuple{experiments::DocumentKind::kLayer, "checkout", layer_spec},
        std::tuple{experiments::DocumentKind::kExperiment, "cta", Experiment(cta_fields)}}) {
    auto doc = experiments::ParseModelSpec(kind, id, Json::parse(spec));
    ASSERT_TRUE(doc.ok()) << doc.status();
    documents.push_back(*std::move(doc));
  }
  auto model = experiments::ConfigSnapshot::Build(std::move(documents));
  ASSERT_TRUE(model.ok()) << model.status();
  experiments::Assigner in_process(*model);
  for (size_t i = 0; i < units.size(); ++i) {
    experiments::EvaluationResult result;
    in_process.Evaluate(units[i]["attributes"], &result);
    Json expected = result.ToJson();
    EXPECT_EQ(batch["results"][i]["assignments"], expected["assignments"]) << i;
    EXPECT_EQ(batch["results"][i]["parameters"], expected["parameters"]) << i;
  }

  // Once running: frozen fields and the lifecycle are checked against the stored document.
  const std::string at_revision = "/v1/experiments/cta?revision=" + std::to_string(revision);
  HttpAnswer salt = Put(at_revision, Experiment(cta_fields + R"(, "salt": "new")"));
  EXPECT_EQ(salt.status, 400);
  EXPECT_EQ(JsonOf(salt)["error"]["field"], "salt") << salt.body;
  HttpAnswer back_to_draft =
      Put(at_revision, Experiment(R"("layer": "checkout", "state": "draft", "coverage": 0.5)"));
  EXPECT_EQ(back_to_draft.status, 400);
  EXPECT_EQ(JsonOf(back_to_draft)["error"]["field"], "state") << back_to_draft.body;
  HttpAnswer shrink =
      Put(at_revision, Experiment(R"("layer": "checkout", "state": "running", "coverage": 0.4)"));
  EXPECT_EQ(shrink.status, 400);
  EXPECT_EQ(JsonOf(shrink)["error"]["field"], "coverage") << shrink.body;
  // A stale revision is still a conflict.
  EXPECT_EQ(Put("/v1/experiments/cta?revision=1", Experiment(cta_fields)).status, 409);
  // The layer cannot go while the experiment names it.
  HttpAnswer delete_layer = HttpCall(port_, "DELETE", "/v1/layers/checkout");
  EXPECT_EQ(delete_layer.status, 400) << delete_layer.body;
  EXPECT_EQ(JsonOf(delete_layer)["error"]["field"], "experiments/cta") << delete_layer.body;

  // Ramp 0.5 -> 1.0 in ten steps: everyone assigned stays in their variant.
  std::vector<double> ramp_ms, put_ms;  // PUT start -> evaluate sees it; the PUT alone
  std::map<std::string, std::string> previous = at_half;
  for (int step = 1; step <= 10; ++step) {
    double coverage_now = 0.5 + 0.05 * step;
    uint64_t generation_before =
        JsonOf(HttpCall(port_, "POST", "/v1/evaluate", units[0].dump()))["generation"]
            .get<uint64_t>();
    auto start = std::chrono::steady_clock::now();
    HttpAnswer ramp = Put("/v1/experiments/cta?revision=" + std::to_string(revision),
                          Experiment(R"("layer": "checkout", "state": "running", "coverage": )" +
                                     std::to_string(coverage_now)));
    ASSERT_EQ(ramp.status, 200) << ramp.body;
    put_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    revision = JsonOf(ramp)["revision"].get<int64_t>();
    ASSERT_TRUE(Eventually([&] {
      Json seen = JsonOf(HttpCall(port_, "POST", "/v1/evaluate", units[0].dump()));
      return seen.is_object() && seen["generation"].get<uint64_t>() > generation_before;
    }));
    ramp_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    Json ramped =
        JsonOf(HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", units}}.dump()));
    std::map<std::string, std::string> now = VariantsOf(ramped["results"], "cta");
    for (const auto& [unit, variant] : previous) {
      ASSERT_TRUE(now.count(unit)) << unit << " left the experiment at coverage " << coverage_now;
      EXPECT_EQ(now[unit], variant) << unit << " changed variant at coverage " << coverage_now;
    }
    EXPECT_GE(now.size(), previous.size());
    previous = std::move(now);
  }
  EXPECT_EQ(previous.size(), units.size());  // coverage 1: everyone

  // Running experiments are stopped, not deleted.
  HttpAnswer delete_running = HttpCall(port_, "DELETE", "/v1/experiments/cta");
  EXPECT_EQ(delete_running.status, 400) << delete_running.body;
  EXPECT_EQ(JsonOf(delete_running)["error"]["field"], "state") << delete_running.body;

  // A bad set written behind the API's back never replaces the good one.
  const std::string prefix = "/capstan/experiments/config/";
  ASSERT_TRUE(client_
                  ->Put(prefix + "experiments/ghost",
                        Experiment(R"("id": "ghost", "layer": "nowhere", "state": "running")"))
                  .ok());
  Json status;
  ASSERT_TRUE(Eventually([&] {
    status = JsonOf(HttpCall(port_, "GET", "/v1/status"));
    return status.is_object() && status["model"].contains("error");
  })) << status.dump();
  EXPECT_FALSE(status["model"]["ok"].get<bool>());
  EXPECT_EQ(status["model"]["error"]["document"], "experiments/ghost") << status.dump();
  EXPECT_EQ(status["model"]["error"]["field"], "layer");
  Json kept = JsonOf(HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", units}}.dump()));
  EXPECT_EQ(VariantsOf(kept["results"], "cta"), previous);
  // Mended through the API (deleting the bad document is allowed: it mends).
  ASSERT_EQ(HttpCall(port_, "DELETE", "/v1/experiments/ghost").status, 200);
  ASSERT_TRUE(Eventually([&] {
    status = JsonOf(HttpCall(port_, "GET", "/v1/status"));
    return status.is_object() && status["model"]["ok"] == true;
  })) << status.dump();

  // Bounded batches; exposures counted once per unit.
  HttpAnswer too_many =
      HttpCall(port_, "POST", "/v1/evaluate/batch", Json{{"units", Units(501)}}.dump());
  EXPECT_EQ(too_many.status, 413) << too_many.body;
  EXPECT_EQ(JsonOf(too_many)["error"]["limit"], 500);
  std::string metrics = HttpCall(port_, "GET", "/metrics").body;
  EXPECT_NE(metrics.find("capstan_experiments_exposures_logged "), std::string::npos);
  EXPECT_NE(metrics.find("capstan_experiments_exposures_deduplicated "), std::string::npos);
  EXPECT_NE(metrics.find("capstan_experiments_model_build_failures_total 1"), std::string::npos)
      << metrics;

  std::printf(
      "layered model propagation, API write -> /v1/evaluate sees it: create %.2f ms; "
      "%zu ramp steps p50 %.2f ms, max %.2f ms (the PUT alone, write checks included: p50 %.2f "
      "ms)\n",
      create_ms, ramp_ms.size(), Percentile(ramp_ms, 0.5), Percentile(ramp_ms, 1.0),
      Percentile(put_ms, 0.5));
  RecordProperty("layered_propagation_p50_ms", std::to_string(Percentile(ramp_ms, 0.5)));
}

TEST_F(ExperimentsServiceE2E, AnalyzeAnswersAWelchTTest) {
  HttpAnswer welch = HttpCall(port_, "POST", "/v1/analyze", R"({"op": "welchTTest",
      "a": {"n": 5000, "sum": 50000, "sum_squares": 520000},
      "b": {"n": 5000, "sum": 50800, "sum_squares": 536000}})");
  ASSERT_EQ(welch.status, 200) << welch.body;
  Json answer = JsonOf(welch);
  EXPECT_NEAR(answer["diff"].get<double>(), 0.16, 1e-9);
  EXPECT_GT(answer["p_value"].get<double>(), 0.0);
  EXPECT_LT(answer["p_value"].get<double>(), 1.0);
  HttpAnswer bad = HttpCall(port_, "POST", "/v1/analyze", R"({"op": "welchTTest",
      "a": {"n": 1, "mean": 1, "variance": 1}, "b": {"n": 10, "mean": 1, "variance": 1}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(JsonOf(bad)["error"]["field"], "a.n") << bad.body;
}

TEST_F(ExperimentsServiceE2E, UnknownClientKeysAre400AsInGrowthBook) {
  HttpAnswer features = HttpCall(port_, "GET", "/api/features/sdk-nope");
  EXPECT_EQ(features.status, 400);
  EXPECT_EQ(JsonOf(features)["error"], "Invalid API Key");
  EXPECT_EQ(HttpCall(port_, "POST", "/api/eval/sdk-nope", "{}").status, 400);
  HttpAnswer preflight =
      HttpCall(port_, "OPTIONS", "/api/eval/sdk-nope", "",
               {"Origin: http://app.example", "Access-Control-Request-Method: POST"});
  EXPECT_EQ(preflight.status, 204);
  EXPECT_NE(preflight.head.find("Access-Control-Allow-Origin: *"), std::string::npos);
}

TEST_F(ExperimentsServiceE2E, TheUnmodifiedGrowthBookSdkEvaluatesFromTheService) {
  const std::string sdk_dir = std::string(CAPSTAN_SOURCE_DIR) + "/tests/e2e/growthbook";
  CommandResult installed = RunCommand({"bash", sdk_dir + "/install.sh"}, "", 300s);
  if (installed.exit_code == 77) GTEST_SKIP() << installed.err;
  ASSERT_EQ(installed.exit_code, 0) << installed.err;

  const std::string key = "Ns04T5n9+59rl2x3SlNHtQ==";
  ASSERT_EQ(Put("/v1/saved-groups/vips", R"({"values": ["u1", "u3"]})").status, 201);
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-e2e", R"({"environment": "production"})").status, 201);
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-e2e-secret",
                R"({"environment": "production", "encryptPayload": true, "encryptionKey": ")" +
                    key + "\"}")
                .status,
            201);
  ASSERT_EQ(Put("/v1/features/banner", R"({"defaultValue": "blue",
      "rules": [{"force": "red", "condition": {"country": "NL"}}]})")
                .status,
            201);
  ASSERT_EQ(Put("/v1/features/vip", R"({"defaultValue": false,
      "rules": [{"force": true, "condition": {"id": {"$inGroup": "vips"}}}]})")
                .status,
            201);
  ASSERT_EQ(Put("/v1/features/checkout", R"({"defaultValue": 0, "environments": {
      "production": {"enabled": true, "rules": [{"key": "exp-checkout", "variations": [0, 1, 2],
          "weights": [0.34, 0.33, 0.33], "hashAttribute": "id", "hashVersion": 2,
          "meta": [{"key": "a"}, {"key": "b"}, {"key": "c"}]}]},
      "dev": {"enabled": false}}})")
                .status,
            201);
  ASSERT_EQ(Put("/v1/features/rollout", R"({"defaultValue": false,
      "rules": [{"force": true, "coverage": 0.5, "hashAttribute": "id"}]})")
                .status,
            201);
  // The service has the last document before the SDK asks.
  ASSERT_TRUE(Eventually([&] {
    Json payload = JsonOf(HttpCall(port_, "GET", "/api/features/sdk-e2e"));
    return payload.is_object() && payload["features"].contains("rollout");
  }));

  std::vector<std::string> features = {"banner", "vip", "checkout", "rollout"};
  Json users = Json::array();
  for (int i = 1; i <= 12; ++i) {
    users.push_back(
        {{"attributes", {{"id", "u" + std::to_string(i)}, {"country", i % 3 == 0 ? "NL" : "US"}}}});
  }
  users.push_back({{"attributes", {{"id", "u5"}, {"country", "NL"}}},
                   {"forcedVariations", {{"exp-checkout", 2}}}});
  Json config = {{"apiHost", "http://127.0.0.1:" + std::to_string(port_)},
                 {"clientKey", "sdk-e2e"},
                 {"encryptedClientKey", "sdk-e2e-secret"},
                 {"decryptionKey", key},
                 {"features", features},
                 {"users", users}};
  CommandResult ran = RunCommand({"node", sdk_dir + "/service_sdk.cjs", config.dump()}, "", 120s);
  ASSERT_EQ(ran.exit_code, 0) << ran.err << ran.out << service_->Log();
  Json out = Json::parse(ran.out, nullptr, false);
  ASSERT_TRUE(out.is_object()) << ran.out;
  ASSERT_EQ(out["users"].size(), users.size());
  int in_rollout = 0, tracked = 0;
  for (size_t i = 0; i < users.size(); ++i) {
    const Json& got = out["users"][i];
    const Json& attributes = users[i]["attributes"];
    std::string id = attributes["id"];
    SCOPED_TRACE(users[i].dump());
    EXPECT_EQ(got["local"]["banner"]["value"], attributes["country"] == "NL" ? "red" : "blue");
    EXPECT_EQ(got["local"]["vip"]["value"], id == "u1" || id == "u3");
    // The three routes agree: the SDK evaluating the served payload (plain
    // and encrypted) and Capstan evaluating for it (remote).
    // Remote evaluation leaves out what is off (as GrowthBook's does), which
    // the SDK then reads as an unknown feature: null, still off.
    for (const std::string& f : features) {
      EXPECT_EQ(got["local"][f]["value"], got["encrypted"][f]["value"]) << f;
      EXPECT_EQ(got["local"][f]["on"], got["remote"][f]["on"]) << f;
      if (got["local"][f]["on"] == true || got["remote"][f]["value"] != nullptr) {
        EXPECT_EQ(got["local"][f]["value"], got["remote"][f]["value"]) << f;
      }
    }
    // Remote evaluation reports the same experiment assignments to the
    // tracking callback as local evaluation (a forced variation is not
    // tracked locally, but is by GrowthBook's remote evaluation too).
    if (!users[i].contains("forcedVariations")) {
      EXPECT_EQ(got["localTracked"], got["remoteTracked"]);
    }
    // POST /api/eval's whole answer is what GrowthBook's back-end computes.
    ASSERT_TRUE(got.contains("remoteEvalDiff"));
    EXPECT_TRUE(got["remoteEvalDiff"].is_null()) << got["remoteEvalDiff"].dump(2);
    tracked += static_cast<int>(got["remoteTracked"].size());
    in_rollout += got["local"]["rollout"]["value"] == true ? 1 : 0;
  }
  EXPECT_EQ(out["users"].back()["remote"]["checkout"]["value"], 2);  // forced variation
  EXPECT_GT(tracked, 0);
  EXPECT_GT(in_rollout, 0);
  EXPECT_LT(in_rollout, static_cast<int>(users.size()));
}

}  // namespace
}  // namespace capstan::e2e
