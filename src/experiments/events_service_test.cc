// The event endpoints through the router, without a server or a store: 200
// with counts, 400 naming line and field, 413, 429 with Retry-After while the
// writer is held, and the results endpoint's query errors.
#include "experiments/events_service.h"

#include <filesystem>
#include <future>

#include "experiments/event_store_test_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments {
namespace {

using JsonValue = nlohmann::json;

// A temporary directory, removed when destroyed.
struct TempDirectory {
  TempDirectory() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "events_service_XXXXXX").string();
    path = ::mkdtemp(pattern.data());
  }
  ~TempDirectory() { std::filesystem::remove_all(path); }
  std::string path;
};

class EventsEndpoints : public ::testing::Test {
 protected:
  void Install(EventsOptions options) {
    options.directory = dir_.path + "/events";
    ServiceContext context{
        .store = nullptr, .watcher = nullptr, .router = &router_, .registry = &registry_};
    absl::Status st = MakeEventsExtension(std::move(options))(context);
    ASSERT_TRUE(st.ok()) << st;
  }

  net::HttpResponse Call(std::string method, std::string path, std::string body = "",
                         std::string query = "") {
    net::HttpRequest request;
    request.method = std::move(method);
    request.path = std::move(path);
    request.query = std::move(query);
    request.body = std::move(body);
    return router_.Dispatch(request);
  }

  static std::string Exposures(int count, const std::string& prefix) {
    std::string body;
    for (int i = 0; i < count; ++i) {
      std::string id = prefix + std::to_string(i);
      body += R"({"type":"exposure","key":")" + id + R"(","experiment":"e","unit":")" + id +
              R"(","variant":")" + (i % 2 == 0 ? "control" : "b") + R"(","ts":1})" + "\n";
    }
    return body;
  }

  // Declared first, destroyed last: the routes own the store, which
  // checkpoints into the directory as it closes.
  TempDirectory dir_;
  net::HttpRouter router_;
  metrics::Registry registry_;
};

TEST_F(EventsEndpoints, AcceptsRefusesAndAnswersResults) {
  ASSERT_NO_FATAL_FAILURE(Install({}));
  net::HttpResponse ok = Call("POST", "/v1/events", Exposures(10, "u"));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(JsonValue::parse(ok.body)["accepted"], 10);
  ok = Call("POST", "/v1/events", Exposures(12, "u"));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(JsonValue::parse(ok.body)["accepted"], 2);
  EXPECT_EQ(JsonValue::parse(ok.body)["duplicates"], 10);

  net::HttpResponse bad = Call("POST", "/v1/events", Exposures(2, "v") + "{\"type\":\"exposure\"}");
  ASSERT_EQ(bad.status, 400) << bad.body;
  JsonValue error = JsonValue::parse(bad.body)["error"];
  EXPECT_EQ(error["line"], 3);
  EXPECT_EQ(error["field"], "key");

  net::HttpResponse large = Call("POST", "/v1/events", std::string(kMaxEventBatchBytes + 1, ' '));
  EXPECT_EQ(large.status, 413) << large.body;

  net::HttpResponse results = Call("GET", "/v1/experiments/e/results");
  ASSERT_EQ(results.status, 200) << results.body;
  JsonValue r = JsonValue::parse(results.body);
  EXPECT_EQ(r["variants"][0]["variant"], "control");
  EXPECT_EQ(r["variants"][0]["units"], 6);
  EXPECT_EQ(r["variants"][1]["units"], 6);
  EXPECT_EQ(r["srm"]["status"], "ok");

  results =
      Call("GET", "/v1/experiments/e/results", "", "control=b&alpha=0.1&weights=control:1,b:3");
  ASSERT_EQ(results.status, 200) << results.body;
  r = JsonValue::parse(results.body);
  EXPECT_EQ(r["control"], "b");
  EXPECT_EQ(r["alpha"], 0.1);
  EXPECT_EQ(r["variants"][0]["weight"], 3.0);
  EXPECT_EQ(Call("GET", "/v1/experiments/e/results", "", "alpha=2").status, 400);
  EXPECT_EQ(Call("GET", "/v1/experiments/e/results", "", "weights=b").status, 400);
  EXPECT_EQ(Call("GET", "/v1/experiments/e/results", "", "color=red").status, 400);
  EXPECT_EQ(Call("GET", "/v1/experiments/e/results", "", "control=nope").status, 400);

  net::HttpResponse status = Call("GET", "/v1/events/status");
  ASSERT_EQ(status.status, 200);
  EXPECT_EQ(JsonValue::parse(status.body)["logSequence"], 12);
  std::string metrics = registry_.RenderText();
  EXPECT_NE(metrics.find("capstan_experiments_events_accepted_total 12"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("capstan_experiments_events_rejected_batches_total 2"), std::string::npos)
      << metrics;
}

TEST_F(EventsEndpoints, AnswersTooManyRequestsWhileThePipelineIsBehind) {
  event_store_testing::FirstCallGate gate;
  ASSERT_NO_FATAL_FAILURE(Install({.max_queued_events = kMaxEventsPerBatch,
                                   .retry_after_seconds = 2,
                                   .before_group_write = gate.Hook()}));
  auto held = std::async(std::launch::async, [&] {
    return Call("POST", "/v1/events", Exposures(static_cast<int>(kMaxEventsPerBatch), "h"));
  });
  gate.WaitEntered();
  net::HttpResponse behind = Call("POST", "/v1/events", Exposures(1, "x"));
  EXPECT_EQ(behind.status, 429) << behind.body;
  bool retry_after = false;
  for (const auto& [name, value] : behind.headers)
    retry_after |= name == "Retry-After" && value == "2";
  EXPECT_TRUE(retry_after);
  gate.Release();
  EXPECT_EQ(held.get().status, 200);
  EXPECT_EQ(Call("POST", "/v1/events", Exposures(1, "x")).status, 200);
  EXPECT_NE(registry_.RenderText().find("capstan_experiments_events_throttled_batches_total 1"),
            std::string::npos);
}

}  // namespace
}  // namespace capstan::experiments
