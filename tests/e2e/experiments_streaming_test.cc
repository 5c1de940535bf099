// GrowthBook streaming (GET /sub/{clientKey}, server-sent events) of
// `capstan experiments serve` against a real `capstan store`: the
// unmodified npm SDK with streaming: true (plain and encrypted connections)
// sees each change written through the API without refetching (the
// propagation time is printed, not asserted); the subscriber limit and
// heartbeat flags, seen through curl.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "experiments/js_value.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace capstan::e2e {
namespace {

using experiments::Json;
using namespace std::chrono_literals;

Json JsonOf(const HttpAnswer& a) { return Json::parse(a.body, nullptr, false); }

class ExperimentsStreamingE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("experiments_streaming");
    store_ = std::make_unique<StoreProcess>(StoreProcess::Kind::kCapstan, dir_->path() + "/store");
    ASSERT_TRUE(store_->Start()) << store_->Log();
    service_ = StartExperimentsService(store_->endpoint(), dir_->path(), {}, &port_);
    ASSERT_NE(port_, 0) << service_->Log();
  }

  void TearDown() override {
    if (service_ != nullptr) {
      service_->Signal(SIGTERM);
      int status = service_->Wait(30s);
      EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                                                 << service_->Log();
    }
    if (store_ != nullptr) store_->Stop();
  }

  HttpAnswer Put(const std::string& path, const std::string& body) {
    return HttpCall(port_, "PUT", path, body);
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<StoreProcess> store_;
  std::unique_ptr<Process> service_;
  int port_ = 0;
};

// Streaming's flags reach the service: curl holds the one subscription
// --sse-max-subscribers allows and sees the payload and heartbeats; one
// more is 503; curl gone, its subscription is cleaned up. A limit the
// connections cannot hold is refused at start, naming the flag.
TEST_F(ExperimentsStreamingE2E, StreamingSubscribersAreBoundedByTheFlag) {
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-limit", "{}").status, 201);
  const std::string sub_dir = dir_->path() + "/limited";
  std::filesystem::create_directories(sub_dir);
  int port = 0;
  std::unique_ptr<Process> limited =
      StartExperimentsService(store_->endpoint(), sub_dir,
                              {"--sse-max-subscribers", "1", "--sse-heartbeat-ms", "200"}, &port);
  ASSERT_NE(port, 0) << limited->Log();
  ASSERT_TRUE(
      Eventually([&] { return HttpCall(port, "GET", "/api/features/sdk-limit").status == 200; }));
  Process curl({"curl", "-sN", "http://127.0.0.1:" + std::to_string(port) + "/sub/sdk-limit"},
               sub_dir + "/curl.log");
  EXPECT_TRUE(Eventually([&] {
    std::string got = curl.Log();
    return got.find("event: features") != std::string::npos &&
           got.find(": heartbeat") != std::string::npos;
  })) << curl.Log();
  HttpAnswer busy = HttpCall(port, "GET", "/sub/sdk-limit");
  EXPECT_EQ(busy.status, 503) << busy.head << busy.body;
  EXPECT_EQ(JsonOf(busy)["error"]["code"], "too_many_subscribers") << busy.body;
  EXPECT_EQ(JsonOf(busy)["error"]["limit"], 1) << busy.body;
  EXPECT_NE(busy.head.find("Retry-After: 5"), std::string::npos) << busy.head;
  curl.Signal(SIGTERM);
  curl.Wait(10s);
  EXPECT_TRUE(Eventually([&] {
    return HttpCall(port, "GET", "/metrics").body.find("capstan_experiments_sse_subscribers 0") !=
           std::string::npos;
  }));
  limited->Signal(SIGTERM);
  EXPECT_NE(limited->Wait(30s), -1);

  CommandResult refused = RunCommand(
      {CapstanBinary(), "experiments", "serve", "--store", store_->endpoint(), "--listen",
       "127.0.0.1:0", "--max-connections", "100", "--sse-max-subscribers", "100"},
      "", 30s);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("--sse-max-subscribers"), std::string::npos) << refused.err;
}

// GrowthBook streaming: the unmodified SDK with streaming: true subscribes to
// GET /sub/{clientKey} (plain and encrypted connections), and each change
// written through the API reaches its evaluation by server-sent event, with
// no fetch after init. The propagation (PUT sent -> both SDKs evaluate the
// new value) is printed, not asserted.
TEST_F(ExperimentsStreamingE2E, TheGrowthBookSdkStreamsChangesWithoutRefetching) {
  const std::string sdk_dir = std::string(CAPSTAN_SOURCE_DIR) + "/tests/e2e/growthbook";
  CommandResult installed = RunCommand({"bash", sdk_dir + "/install.sh"}, "", 300s);
  if (installed.exit_code == 77) GTEST_SKIP() << installed.err;
  ASSERT_EQ(installed.exit_code, 0) << installed.err;
  const std::string key = "Ns04T5n9+59rl2x3SlNHtQ==";
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-sse", "{}").status, 201);
  ASSERT_EQ(Put("/v1/sdk-connections/sdk-sse-secret",
                R"({"encryptPayload": true, "encryptionKey": ")" + key + "\"}")
                .status,
            201);
  ASSERT_EQ(Put("/v1/features/live", R"({"defaultValue": "v0"})").status, 201);
  ASSERT_TRUE(Eventually([&] {
    HttpAnswer a = HttpCall(port_, "GET", "/api/features/sdk-sse-secret");
    return a.status == 200 && a.head.find("x-sse-support: enabled") != std::string::npos &&
           JsonOf(HttpCall(port_, "GET", "/api/features/sdk-sse"))["features"].contains("live");
  }));

  const int rounds = 20;
  Json config = {{"apiHost", "http://127.0.0.1:" + std::to_string(port_)},
                 {"clientKey", "sdk-sse"},
                 {"encryptedClientKey", "sdk-sse-secret"},
                 {"decryptionKey", key},
                 {"feature", "live"},
                 {"rounds", rounds},
                 {"timeoutMs", 10000}};
  CommandResult ran = RunCommand({"node", sdk_dir + "/service_sse.cjs", config.dump()}, "", 120s);
  ASSERT_EQ(ran.exit_code, 0) << ran.err << ran.out << service_->Log();
  Json out = Json::parse(ran.out, nullptr, false);
  ASSERT_TRUE(out.is_object()) << ran.out;
  EXPECT_EQ(out["rounds"], rounds);
  EXPECT_EQ(out["streamsOpened"], 2) << out.dump();
  EXPECT_EQ(out["streamUrls"],
            Json::array({config["apiHost"].get<std::string>() + "/sub/sdk-sse",
                         config["apiHost"].get<std::string>() + "/sub/sdk-sse-secret"}));
  // One GET /api/features per instance at init, none after: the changes came by stream.
  EXPECT_EQ(out["fetchesAfterInit"], 2) << out["sdkFetches"].dump();
  EXPECT_EQ(out["fetchesAtEnd"], 2) << out["sdkFetches"].dump();

  std::vector<double> propagation = out["propagationMs"].get<std::vector<double>>();
  std::vector<double> put = out["putMs"].get<std::vector<double>>();
  ASSERT_EQ(propagation.size(), static_cast<size_t>(rounds));
  std::sort(propagation.begin(), propagation.end());
  std::sort(put.begin(), put.end());
  std::printf(
      "GrowthBook SDK streaming, %d writes: PUT sent -> both SDKs (plain and encrypted) "
      "evaluate the new value: p50 %.1f ms, p99 %.1f ms, max %.1f ms (the PUT alone: "
      "p50 %.1f ms, max %.1f ms)\n",
      rounds, propagation[rounds / 2], propagation[(rounds * 99) / 100], propagation.back(),
      put[rounds / 2], put.back());

  // The SDK is gone: its streams are cleaned up.
  EXPECT_TRUE(Eventually([&] {
    return HttpCall(port_, "GET", "/metrics").body.find("capstan_experiments_sse_subscribers 0") !=
           std::string::npos;
  })) << HttpCall(port_, "GET", "/metrics").body;
}

}  // namespace
}  // namespace capstan::e2e
