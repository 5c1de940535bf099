// ExperimentRouting (the gateway's assignment of units to an experiment's
// variants and clusters) and EventShipper (events to the experiments
// service in batches, bounded, retried).
#include "gateway/experiment_routing.h"

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "experiments/model.h"
#include "experiments/snapshot.h"
#include "gtest/gtest.h"
#include "net/http_server.h"
#include "nlohmann/json.hpp"

namespace capstan::gateway {
namespace {

using namespace std::chrono_literals;
using experiments::ConfigSnapshot;
using Json = nlohmann::json;

// A model with one layer holding experiment `checkout`: variants a and b,
// 50/50, in `state`.
std::shared_ptr<const ConfigSnapshot> Model(const std::string& state = "running") {
  std::vector<ConfigSnapshot::StoredDocument> docs = {
      {std::string(experiments::kModelPrefix) + "domains/main", R"({"id":"main"})", 1},
      {std::string(experiments::kModelPrefix) + "layers/web", R"({"id":"web","domain":"main"})", 1},
      {std::string(experiments::kModelPrefix) + "experiments/checkout",
       R"({"id":"checkout","layer":"web","state":")" + state +
           R"(","variants":[{"id":"a"},{"id":"b"}]})",
       1}};
  auto built = ConfigSnapshot::BuildFromStore(docs);
  EXPECT_TRUE(built.ok()) << built.status();
  return *built;
}

ExperimentRoute Route() {
  ExperimentRoute r;
  r.experiment = "checkout";
  r.variants = {{"a", "cluster-a"}, {"b", "cluster-b"}};
  r.default_cluster = "cluster-default";
  r.unit_header = "x-user-id";
  return r;
}

// What the model alone says of a unit.
std::string VariantOf(const ConfigSnapshot& model, const std::string& unit) {
  experiments::EvaluationResult result;
  Json attributes = {{"id", unit}};
  model.Evaluate(attributes, &result);
  const experiments::Assignment* a = result.assignment("checkout");
  return a == nullptr || a->variant < 0 ? "" : a->experiment->variant_ids[a->variant];
}

TEST(ExperimentRouting, SendsEachUnitToItsVariantsClusterAndTellsTheUpstream) {
  auto routing = ExperimentRouting::StartWithoutStore(ExperimentsConfig{}).value();
  auto model = Model();
  routing->SetModel(model);
  ExperimentRoute route = Route();
  std::map<std::string, int> clusters;
  for (int i = 0; i < 200; ++i) {
    std::string unit = "user-" + std::to_string(i);
    net::http1::HeaderFields fields;
    fields.Add("x-user-id", unit);
    ExperimentRouting::Decision d = routing->Assign(route, &fields);
    std::string want = VariantOf(*model, unit);
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(d.variant, want) << unit;
    EXPECT_EQ(*d.cluster, "cluster-" + want) << unit;
    EXPECT_FALSE(d.new_unit);
    EXPECT_EQ(fields.Get("x-capstan-experiment"), "checkout=" + want);
    EXPECT_EQ(fields.Get("x-capstan-unit"), unit);
    ++clusters[*d.cluster];
  }
  // Both variants get traffic (50/50 over 200 units).
  EXPECT_GT(clusters["cluster-a"], 60);
  EXPECT_GT(clusters["cluster-b"], 60);
}

TEST(ExperimentRouting, AnAnonymousUnitGetsACookieAndKeepsItsVariant) {
  auto routing = ExperimentRouting::StartWithoutStore(ExperimentsConfig{}).value();
  routing->SetModel(Model());
  ExperimentRoute route = Route();
  net::http1::HeaderFields first;
  ExperimentRouting::Decision d = routing->Assign(route, &first);
  ASSERT_TRUE(d.new_unit);
  EXPECT_EQ(d.unit.size(), 32u);
  std::string cookie = routing->SetCookieValue(route, d);
  EXPECT_EQ(cookie, "capstan_uid=" + d.unit + "; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax");

  for (int i = 0; i < 3; ++i) {
    net::http1::HeaderFields again;
    again.Add("cookie", "theme=dark; capstan_uid=" + d.unit);
    ExperimentRouting::Decision next = routing->Assign(route, &again);
    EXPECT_FALSE(next.new_unit);
    EXPECT_EQ(next.unit, d.unit);
    EXPECT_EQ(next.variant, d.variant);
  }
}

TEST(ExperimentRouting, AUnitThatCannotTravelIsNotUsed) {
  auto routing = ExperimentRouting::StartWithoutStore(ExperimentsConfig{}).value();
  routing->SetModel(Model());
  ExperimentRoute route = Route();
  for (std::string bad : {std::string("has space"), std::string(129, 'x'), std::string("a;b"),
                          std::string("quote\"d")}) {
    net::http1::HeaderFields fields;
    fields.Add("x-user-id", bad);
    ExperimentRouting::Decision d = routing->Assign(route, &fields);
    EXPECT_NE(d.unit, bad);
    EXPECT_TRUE(d.new_unit) << "a bad header falls back to a cookie unit: " << bad;
  }
  // Without a cookie to fall back to, no unit: the default cluster.
  route.unit_cookie.clear();
  net::http1::HeaderFields fields;
  fields.Add("x-user-id", "has space");
  // A client claiming an assignment of its own does not get it upstream.
  fields.Add("x-capstan-experiment", "checkout=b");
  fields.Add("x-capstan-unit", "someone-else");
  ExperimentRouting::Decision d = routing->Assign(route, &fields);
  EXPECT_EQ(*d.cluster, "cluster-default");
  EXPECT_TRUE(d.variant.empty());
  EXPECT_FALSE(fields.Get("x-capstan-experiment").has_value());
  EXPECT_FALSE(fields.Get("x-capstan-unit").has_value());
}

TEST(ExperimentRouting, UnitsInNoVariantGoToTheDefaultCluster) {
  auto routing = ExperimentRouting::StartWithoutStore(ExperimentsConfig{}).value();
  ExperimentRoute route = Route();
  // No model yet, then a draft experiment: nobody is assigned.
  for (const char* state : {"", "draft"}) {
    if (*state != 0) routing->SetModel(Model(state));
    net::http1::HeaderFields fields;
    fields.Add("x-user-id", "user-1");
    ExperimentRouting::Decision d = routing->Assign(route, &fields);
    EXPECT_EQ(*d.cluster, "cluster-default") << state;
    EXPECT_EQ(fields.Get("x-capstan-experiment"), "checkout=") << state;
  }
  // A variant the route does not map goes to the default cluster too.
  routing->SetModel(Model());
  route.variants = {{"a", "cluster-a"}};
  for (int i = 0; i < 50; ++i) {
    net::http1::HeaderFields fields;
    fields.Add("x-user-id", "user-" + std::to_string(i));
    ExperimentRouting::Decision d = routing->Assign(route, &fields);
    EXPECT_EQ(*d.cluster, d.variant == "a" ? "cluster-a" : "cluster-default");
  }
}

// An HTTP server standing in for the experiments service's /v1/events: it
// keeps each body and answers the statuses it is told to, in order (then
// 200).
class FakeEventsService {
 public:
  explicit FakeEventsService(std::vector<int> statuses = {}) : statuses_(std::move(statuses)) {
    server_.HandleAll([this](const net::HttpRequest& request) {
      std::lock_guard<std::mutex> lock(mu_);
      int status = 200;
      if (next_ < statuses_.size()) status = statuses_[next_++];
      if (status == 200) bodies_.push_back(request.body);
      ++requests_;
      return net::HttpResponse{.status = status, .body = "{}"};
    });
    EXPECT_TRUE(server_.Start("127.0.0.1", 0).ok());
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(server_.port()) + "/v1/events";
  }
  std::vector<std::string> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  int requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // Every event line received, parsed.
  std::vector<Json> Events() {
    std::vector<Json> events;
    for (const std::string& body : bodies()) {
      for (absl::string_view line : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
        events.push_back(Json::parse(std::string(line)));
      }
    }
    return events;
  }

 private:
  net::HttpServer server_;
  std::mutex mu_;
  std::vector<int> statuses_;
  size_t next_ = 0;
  std::vector<std::string> bodies_;
  int requests_ = 0;
};

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);  // polling a condition, bounded above
  }
  return true;
}

TEST(EventShipper, SendsFullBatchesAndFlushesAPartialOneAfterTheInterval) {
  FakeEventsService service;
  auto shipper =
      EventShipper::Start({.url = service.url(), .batch_events = 3, .flush_interval = 200ms})
          .value();
  for (int i = 0; i < 7; ++i) shipper->Add(R"({"n":)" + std::to_string(i) + "}");
  ASSERT_TRUE(WaitFor([&] { return shipper->stats().events_sent == 7; }))
      << shipper->stats().events_sent;
  std::vector<std::string> bodies = service.bodies();
  ASSERT_EQ(bodies.size(), 3u);
  EXPECT_EQ(bodies[0], "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
  EXPECT_EQ(bodies[2], "{\"n\":6}\n");  // the partial batch, after the interval
  EXPECT_EQ(shipper->stats().batches_sent, 3u);
}

TEST(EventShipper, RetriesABatchTheServiceCouldNotTakeAndDropsOneItRefuses) {
  // 503 then 500: retried (the same batch, in order); 400: dropped.
  FakeEventsService service({503, 500, 200, 400});
  auto shipper = EventShipper::Start({.url = service.url(), .batch_events = 1}).value();
  shipper->Add(R"({"n":1})");
  shipper->Add(R"({"n":2})");
  shipper->Add(R"({"n":3})");
  ASSERT_TRUE(WaitFor([&] {
    EventShipper::Stats s = shipper->stats();
    return s.batches_sent == 2 && s.batches_refused == 1;
  }));
  EventShipper::Stats s = shipper->stats();
  EXPECT_EQ(s.send_failures, 2u);
  EXPECT_EQ(s.batches_dropped, 0u);
  EXPECT_EQ(service.bodies(), (std::vector<std::string>{"{\"n\":1}\n", "{\"n\":3}\n"}));
}

TEST(EventShipper, AServiceThatIsDownCostsBoundedMemoryNeverABlockedCaller) {
  // A port nobody listens on: every send fails; the queue holds two batches
  // and the rest are dropped at once.
  int port;
  {
    net::HttpServer closed;
    ASSERT_TRUE(closed.Start("127.0.0.1", 0).ok());
    port = closed.port();
  }
  auto shipper = EventShipper::Start({.url = "http://127.0.0.1:" + std::to_string(port) + "/",
                                      .batch_events = 1,
                                      .max_pending_batches = 2,
                                      .io_timeout = 300ms})
                     .value();
  for (int i = 0; i < 100; ++i) shipper->Add(R"({"n":0})");
  EventShipper::Stats s = shipper->stats();
  EXPECT_EQ(s.pending_batches, 2u);
  EXPECT_EQ(s.batches_dropped, 98u);
  EXPECT_EQ(s.events_sent, 0u);
  // The destructor gives up after io_timeout instead of waiting for the
  // service forever (the test would hang otherwise).
}

TEST(EventShipper, RefusesAURLItCannotUse) {
  EXPECT_FALSE(EventShipper::Start({.url = "https://127.0.0.1:1/v1/events"}).ok());
  EXPECT_FALSE(EventShipper::Start({.url = "http://127.0.0.1:99999/"}).ok());
  EXPECT_FALSE(EventShipper::Start({.url = "http://:80/"}).ok());
}

TEST(ExperimentRouting, ExposuresOncePerUnitAndVariantMetricsPerRequest) {
  FakeEventsService service;
  ExperimentsConfig config;
  config.events_url = service.url();
  config.batch_events = 1000;
  config.flush_interval = std::chrono::milliseconds(50);
  auto routing = ExperimentRouting::StartWithoutStore(config).value();
  routing->SetModel(Model());
  ExperimentRoute route = Route();
  // 10 units, 3 requests each; unit 0's requests fail with 502.
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 10; ++i) {
      net::http1::HeaderFields fields;
      fields.Add("x-user-id", "user-" + std::to_string(i));
      ExperimentRouting::Decision d = routing->Assign(route, &fields);
      routing->RecordOutcome(route, d, i == 0 ? 502 : 200, 12.5, 1000 + i);
    }
  }
  const size_t want = 10 + 30 * 3;
  ASSERT_TRUE(WaitFor([&] { return routing->shipper()->stats().events_sent == want; }))
      << routing->shipper()->stats().events_sent;
  std::set<std::string> keys;
  std::map<std::string, int> exposures, errors;
  for (const Json& e : service.Events()) {
    keys.insert(e["key"].get<std::string>());
    EXPECT_EQ(e["experiment"], "checkout");
    EXPECT_EQ(e["variant"], VariantOf(*Model(), e["unit"]));
    if (e["type"] == "exposure") {
      ++exposures[e["unit"]];
    } else {
      ASSERT_EQ(e["type"], "ratio");
      EXPECT_EQ(e["denominator"], 1);
      if (e["metric"] == "gateway_error_rate") errors[e["unit"]] += e["numerator"].get<int>();
      if (e["metric"] == "gateway_latency_ms") {
        EXPECT_EQ(e["numerator"], 12.5);
      }
    }
  }
  EXPECT_EQ(keys.size(), want) << "every event has its own idempotency key";
  EXPECT_EQ(exposures.size(), 10u);
  for (const auto& [unit, n] : exposures) EXPECT_EQ(n, 1) << unit;
  EXPECT_EQ(errors["user-0"], 3);
  EXPECT_EQ(errors["user-1"], 0);
}

}  // namespace
}  // namespace capstan::gateway
