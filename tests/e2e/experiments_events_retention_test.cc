// Event log retention end to end: a real `capstan store` and `capstan
// experiments serve` with small log segments, retention 0 (a segment goes
// as soon as a checkpoint and the dedup window cover it) and a small dedup
// window. Batches posted over HTTP from several threads; retention removes
// segments while they run (seen in /v1/events/status and /metrics); the
// service is killed with SIGKILL under load, restarted on the same
// directory, and must open from its checkpoint and the retained log: each
// logged event counted exactly once, no acknowledged event lost, the log
// starting after event 0. A bad retention flag is refused naming it.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "experiments_events_util.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace capstan::e2e {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr int kThreads = 4;
constexpr int kBatchesPerThread = 60;
constexpr int kUnitsPerBatch = 100;  // each: one exposure and one "clicks" value of 1
constexpr int kEventsPerBatch = 2 * kUnitsPerBatch;

std::string Batch(int phase, int t, int b) {
  return EventBatch(
      "p" + std::to_string(phase) + "t" + std::to_string(t) + "-b" + std::to_string(b),
      kUnitsPerBatch);
}

class ExperimentsEventsRetentionE2E : public ExperimentsEventsFixture {
 protected:
  ExperimentsEventsRetentionE2E() : ExperimentsEventsFixture("experiments_events_retention") {}

  std::vector<std::string> Argv(const std::vector<std::string>& overrides) {
    std::vector<std::string> argv = {CapstanBinary(),
                                     "experiments",
                                     "serve",
                                     "--store",
                                     store_->endpoint(),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--threads",
                                     "6",
                                     "--events-dir",
                                     dir_->path() + "/events",
                                     "--events-checkpoint-events",
                                     "2000",
                                     "--events-segment-bytes",
                                     "64KiB",
                                     "--events-retention",
                                     "0",
                                     "--events-dedup-window",
                                     "3000"};
    // Each (flag, value) pair of `overrides` replaces that flag's value, or
    // is added.
    for (size_t i = 0; i + 1 < overrides.size(); i += 2) {
      auto it = std::find(argv.begin(), argv.end(), overrides[i]);
      if (it == argv.end()) {
        argv.push_back(overrides[i]);
        argv.push_back(overrides[i + 1]);
      } else {
        *(it + 1) = overrides[i + 1];
      }
    }
    return argv;
  }

  void StartService(const std::string& log_name) {
    service_ = std::make_unique<Process>(Argv({}), dir_->path() + "/" + log_name);
    port_ = WaitForPrintedPort(*service_, "experiments listening on port ");
    ASSERT_NE(port_, 0) << service_->Log();
  }

  Json Status() {
    HttpAnswer a = EventsHttp(port_, "GET", "/v1/events/status");
    EXPECT_EQ(a.status, 200) << a.body;
    return Json::parse(a.body, nullptr, false);
  }

  // Posts every batch of `phase` from kThreads threads; counts acknowledged
  // batches. Stops a thread at its first answer that is neither 200 nor 429.
  struct Load {
    std::vector<std::thread> threads;
    std::atomic<int> acked{0};
    std::atomic<int> finished{0};
  };
  void StartLoad(int phase, Load* load) {
    for (int t = 0; t < kThreads; ++t) {
      load->threads.emplace_back([this, phase, t, load] {
        for (int b = 0; b < kBatchesPerThread; ++b) {
          HttpAnswer a;
          for (int attempt = 0; attempt < 100; ++attempt) {  // bounded; 429 asks to come back
            a = EventsHttp(port_, "POST", "/v1/events", Batch(phase, t, b));
            if (a.status != 429) break;
          }
          if (a.status != 200) break;  // the service is gone
          load->acked.fetch_add(1);
        }
        load->finished.fetch_add(1);
      });
    }
  }
};

TEST_F(ExperimentsEventsRetentionE2E, RemovesCoveredSegmentsAndSurvivesKillNine) {
  ASSERT_NO_FATAL_FAILURE(StartService("service-1.log"));
  // Phase 1: all of it acknowledged; retention runs after each checkpoint.
  Load first;
  StartLoad(1, &first);
  for (std::thread& t : first.threads) t.join();
  ASSERT_EQ(first.acked.load(), kThreads * kBatchesPerThread);
  const uint64_t phase1_events = static_cast<uint64_t>(first.acked.load()) * kEventsPerBatch;
  Json status;
  ASSERT_TRUE(Eventually(
      [&] {
        status = Status();
        return status["logSegmentsRemoved"].get<uint64_t>() > 0;
      },
      60s))
      << status.dump();
  EXPECT_GT(status["logFirstSequence"].get<uint64_t>(), 0u) << status.dump();
  // Never past the checkpoint or into the dedup window.
  EXPECT_LE(status["logFirstSequence"].get<uint64_t>(),
            status["checkpointSequence"].get<uint64_t>())
      << status.dump();
  EXPECT_LE(status["logFirstSequence"].get<uint64_t>(), phase1_events - 3000) << status.dump();
  HttpAnswer metrics = HttpCall(port_, "GET", "/metrics");
  EXPECT_NE(metrics.body.find("capstan_experiments_events_log_segments_removed_total"),
            std::string::npos);
  EXPECT_NE(metrics.body.find("capstan_experiments_events_log_bytes"), std::string::npos);
  EXPECT_NE(metrics.body.find("capstan_experiments_events_log_first_sequence"), std::string::npos);

  // Phase 2: SIGKILL under load.
  Load second;
  StartLoad(2, &second);
  ASSERT_TRUE(Eventually(
      [&] {
        return second.acked.load() >= kThreads * kBatchesPerThread / 3 ||
               second.finished.load() == kThreads;
      },
      120s));
  service_->Signal(SIGKILL);
  service_->Wait(30s);
  for (std::thread& t : second.threads) t.join();
  const uint64_t acked = static_cast<uint64_t>(first.acked.load() + second.acked.load());

  // Restart: from the checkpoint and what retention left of the log.
  ASSERT_NO_FATAL_FAILURE(StartService("service-2.log"));
  status = Status();
  const uint64_t logged = status["logSequence"].get<uint64_t>();
  EXPECT_GE(logged, acked * kEventsPerBatch) << "an acknowledged batch was lost: " << status.dump();
  EXPECT_EQ(logged % kEventsPerBatch, 0u) << "a batch was stored in part: " << status.dump();
  EXPECT_GT(status["logFirstSequence"].get<uint64_t>(), 0u) << status.dump();
  EXPECT_EQ(status["aggregatedSequence"].get<uint64_t>(), logged) << status.dump();
  std::printf("restart: %llu events in the log, first retained %llu, %llu replayed, %llu bytes\n",
              static_cast<unsigned long long>(logged),
              static_cast<unsigned long long>(status["logFirstSequence"].get<uint64_t>()),
              static_cast<unsigned long long>(status["replayedOnOpen"].get<uint64_t>()),
              static_cast<unsigned long long>(status["logBytes"].get<uint64_t>()));

  // Every logged event counted exactly once, including those whose
  // segments are gone.
  HttpAnswer a = EventsHttp(port_, "GET", "/v1/experiments/checkout/results");
  ASSERT_EQ(a.status, 200) << a.body;
  Json results = Json::parse(a.body, nullptr, false);
  uint64_t units = 0;
  for (const Json& v : results["variants"]) units += v["units"].get<uint64_t>();
  EXPECT_EQ(units, logged / 2) << results.dump();
  ASSERT_EQ(results["metrics"].size(), 1u) << results.dump();
  double clicks = 0;
  for (const Json& v : results["metrics"][0]["variants"]) {
    clicks += v["mean"].get<double>() * v["n"].get<double>();
  }
  EXPECT_DOUBLE_EQ(clicks, static_cast<double>(logged / 2));

  service_->Signal(SIGTERM);
  int wait = service_->Wait(30s);
  EXPECT_TRUE(wait != -1 && WIFEXITED(wait) && WEXITSTATUS(wait) == 0) << service_->Log();
  service_.reset();
}

TEST_F(ExperimentsEventsRetentionE2E, ABadRetentionFlagIsRefusedNamingIt) {
  for (const auto& [flag, value] :
       std::vector<std::pair<std::string, std::string>>{{"--events-retention", "7 days"},
                                                        {"--events-retention-bytes", "lots"},
                                                        {"--events-segment-bytes", "1KiB"}}) {
    Process service(Argv({flag, value}), dir_->path() + "/bad" + flag + ".log");
    int wait = service.Wait(30s);
    EXPECT_TRUE(wait != -1 && WIFEXITED(wait) && WEXITSTATUS(wait) != 0) << flag;
    EXPECT_NE(service.Log().find(flag + ":"), std::string::npos) << service.Log();
  }
}

}  // namespace
}  // namespace capstan::e2e
