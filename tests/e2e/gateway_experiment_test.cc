// Experiment-split routing end to end (issue 19): a real `capstan store`,
// `capstan experiments serve --events-dir`, a `capstan gateway` whose route
// splits by an experiment of the layered model, and two Python origins, one
// per variant. Checks that the gateway assigns each unit as the experiments
// service does (POST /v1/evaluate, the same model from the same store) and
// sends it to its variant's origin with the assignment in a header; that an
// anonymous client gets a cookie and keeps its variant; that the gateway's
// exposures and latency/error metrics reach the results; and that stopping
// the experiment in the store sends everyone to the default cluster.
#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "gateway_harness.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace capstan::e2e {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

class GatewayExperimentE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("gateway_experiment");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    service_ = StartExperimentsService(store_->endpoint(), dir_->path(),
                                       {"--events-dir", dir_->path() + "/events"}, &service_port_);
    ASSERT_NE(service_port_, 0) << service_->Log();

    ASSERT_EQ(Put("/v1/domains/main", "{}").status, 201);
    ASSERT_EQ(Put("/v1/layers/web", R"({"domain": "main"})").status, 201);
    HttpAnswer e = Put("/v1/experiments/checkout", R"({"layer": "web", "state": "running",
        "variants": [{"id": "control", "weight": 0.5}, {"id": "treatment", "weight": 0.5}]})");
    ASSERT_EQ(e.status, 201) << e.body;

    v1_ = std::make_unique<Origin>(*dir_, "v1");
    v2_ = std::make_unique<Origin>(*dir_, "v2");
    std::string config = dir_->path() + "/gateway.yaml";
    admin_port_ = PickFreePort();
    std::ofstream(config) << "listeners: [{address: \"127.0.0.1:0\"}]\n"
                          << "admin: 127.0.0.1:" << admin_port_ << "\n"
                          << "experiments:\n"
                          << "  store: store://" << store_->endpoint() << "\n"
                          << "  events: http://127.0.0.1:" << service_port_ << "/v1/events\n"
                          << "  flush_interval: 100ms\n"
                          << "edge_functions:\n"
                          << "  tag:\n"
                          << "    source: |\n"
                          << "      function on_request(req)\n"
                          << "        if req.experiment ~= nil then\n"
                          << "          req:set_header('x-edge-saw', req.experiment.key .. '/' ..\n"
                          << "                         req.experiment.variant)\n"
                          << "        end\n"
                          << "      end\n"
                          << "virtual_hosts:\n"
                          << "  - name: shop\n"
                          << "    domains: [\"*\"]\n"
                          << "    routes:\n"
                          << "      - match: {prefix: /}\n"
                          << "        experiment:\n"
                          << "          id: checkout\n"
                          << "          unit_header: x-user-id\n"
                          << "          variants: {control: v1, treatment: v2}\n"
                          << "          default: v1\n"
                          << "        edge: {function: tag}\n"
                          << "clusters:\n"
                          << "  - {name: v1, endpoints: [" << v1_->address() << "]}\n"
                          << "  - {name: v2, endpoints: [" << v2_->address() << "]}\n";
    gateway_ =
        std::make_unique<GatewayProcess>(*dir_, std::vector<std::string>{"--config", config});
  }

  void TearDown() override {
    gateway_.reset();
    if (service_ != nullptr) {
      service_->Signal(SIGTERM);
      service_->Wait(30s);
    }
    if (store_ != nullptr) store_->Stop();
  }

  HttpAnswer Put(const std::string& path, const std::string& body) {
    return HttpCall(service_port_, "PUT", path, body,
                    {"Content-Type: application/json", "X-Capstan-User: test"});
  }

  // The variant the experiments service assigns `unit` ("" for none).
  std::string ServiceVariant(const std::string& unit) {
    HttpAnswer a = HttpCall(service_port_, "POST", "/v1/evaluate",
                            R"({"exposures": false, "attributes": {"id": ")" + unit + R"("}})");
    EXPECT_EQ(a.status, 200) << a.body;
    Json j = Json::parse(a.body, nullptr, false);
    for (const Json& as : j["assignments"]) {
      if (as["experiment"] == "checkout") return as.value("variant", "");
    }
    return "";
  }

  // One request through the gateway: the origin's echo (server name and the
  // headers it received), plus the response head.
  struct Answer {
    std::string server;
    std::map<std::string, std::string> headers;
    std::string head;
  };
  Answer Get(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"-i", gateway_->url("/echo")};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = Curl(args);
    Answer a;
    size_t body = r.out.find("\r\n\r\n");
    if (body == std::string::npos) return a;
    a.head = r.out.substr(0, body);
    Json echo = Json::parse(r.out.substr(body + 4), nullptr, false);
    if (echo.is_discarded()) return a;
    a.server = echo.value("server", "");
    for (const Json& h : echo["headers"]) a.headers[h[0]] = h[1];
    return a;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  int service_port_ = 0;
  int admin_port_ = 0;
  std::unique_ptr<Origin> v1_, v2_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(GatewayExperimentE2E, UnitsGoToTheirVariantsOriginAndTheResultsFillIn) {
  // The gateway has the model once a unit is assigned at all.
  ASSERT_TRUE(Eventually([&] {
    return Get({"-H", "x-user-id: probe"}).headers["x-capstan-experiment"] != "checkout=";
  })) << gateway_->process()->Log();

  std::map<std::string, int> per_variant;
  for (int i = 0; i < 40; ++i) {
    std::string unit = "user-" + std::to_string(i);
    std::string want = ServiceVariant(unit);
    ASSERT_FALSE(want.empty()) << unit << " is in the experiment (coverage 1)";
    Answer a = Get({"-H", "x-user-id: " + unit});
    EXPECT_EQ(a.headers["x-capstan-experiment"], "checkout=" + want) << unit;
    EXPECT_EQ(a.headers["x-capstan-unit"], unit);
    EXPECT_EQ(a.server, want == "control" ? "v1" : "v2") << unit;
    // The route's edge function saw the assignment (req.experiment).
    EXPECT_EQ(a.headers["x-edge-saw"], "checkout/" + want) << unit;
    ++per_variant[want];
  }
  EXPECT_GT(per_variant["control"], 5);
  EXPECT_GT(per_variant["treatment"], 5);

  // An anonymous client: a cookie names its new unit, and with it the client
  // stays on the same side.
  Answer first = Get({});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      first.head, m, std::regex("set-cookie: capstan_uid=([0-9a-f]{32})", std::regex::icase)))
      << first.head;
  std::string unit = m[1];
  EXPECT_EQ(first.headers["x-capstan-unit"], unit);
  for (int i = 0; i < 3; ++i) {
    Answer again = Get({"-H", "Cookie: capstan_uid=" + unit});
    EXPECT_EQ(again.server, first.server);
    EXPECT_EQ(again.head.find("set-cookie"), std::string::npos) << again.head;
  }

  // The gateway's events reach the results: exposures per variant, and the
  // latency metric it measured.
  Json results;
  ASSERT_TRUE(Eventually(
      [&] {
        HttpAnswer a = HttpCall(service_port_, "GET", "/v1/experiments/checkout/results");
        results = Json::parse(a.body, nullptr, false);
        if (results.is_discarded()) return false;
        int with_units = 0;
        for (const Json& v : results["variants"]) with_units += v.value("units", 0) > 0;
        bool latency = false;
        for (const Json& metric : results["metrics"])
          latency |= metric["metric"] == "gateway_latency_ms";
        return with_units == 2 && latency;
      },
      30s))
      << results.dump();
}

TEST_F(GatewayExperimentE2E, StoppingTheExperimentInTheStoreSendsEveryoneToTheDefault) {
  ASSERT_TRUE(Eventually([&] {
    return Get({"-H", "x-user-id: probe"}).headers["x-capstan-experiment"] != "checkout=";
  })) << gateway_->process()->Log();
  // The admin /status names the route's experiment and its clusters.
  HttpAnswer status = HttpCall(admin_port_, "GET", "/status");
  EXPECT_NE(status.body.find(R"("experiment": {"id": "checkout", "default": "v1", )"
                             R"("variants": {"control": "v1", "treatment": "v2"}})"),
            std::string::npos)
      << status.body;
  HttpAnswer current = HttpCall(service_port_, "GET", "/v1/experiments/checkout");
  int64_t revision = Json::parse(current.body)["revision"].get<int64_t>();
  HttpAnswer stopped = Put("/v1/experiments/checkout?revision=" + std::to_string(revision),
                           R"({"layer": "web", "state": "stopped",
        "variants": [{"id": "control", "weight": 0.5}, {"id": "treatment", "weight": 0.5}]})");
  ASSERT_EQ(stopped.status, 200) << stopped.body;
  // The watch brings the change; then no unit is assigned and all go to v1.
  ASSERT_TRUE(Eventually([&] {
    return Get({"-H", "x-user-id: probe"}).headers["x-capstan-experiment"] == "checkout=";
  })) << gateway_->process()->Log();
  for (int i = 0; i < 20; ++i) {
    Answer a = Get({"-H", "x-user-id: user-" + std::to_string(i)});
    EXPECT_EQ(a.server, "v1");
    EXPECT_EQ(a.headers["x-capstan-experiment"], "checkout=");
  }
}

}  // namespace
}  // namespace capstan::e2e
