// Event ingestion end to end: a real `capstan store` and `capstan experiments
// serve --events-dir`, batches posted over HTTP from several threads at once,
// the service killed with SIGKILL while they are in flight, restarted on the
// same directory, and every batch sent again with the same idempotency keys.
// Checks: every acknowledged batch is found whole in the dedup index (its
// re-send is all duplicates), the log holds each distinct event once, and the
// results count each exposure and metric event exactly once. The service
// checkpoints its aggregation every kCheckpointEvents events, so the kill
// lands between checkpoints: the restart loads the last one and replays the
// log after it (checked in /v1/events/status). The unit cache holds
// kMaxCachedUnits of the 36,000 units, so the checkpoints evict and the
// restart loads only the first states; at the end the units of an early
// batch of each thread send one more event each, so their states are read
// back from the database (unitsReadBack), and are counted on exactly. The
// ingestion rate is printed, never asserted.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
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

constexpr int kThreads = 6;
constexpr int kBatchesPerThread = 60;
constexpr int kUnitsPerBatch = 100;  // each: one exposure and one "clicks" value of 1
constexpr int kCheckpointEvents = 3000;
constexpr int kMaxCachedUnits = 1000;

// Batch b of thread t: exposures and metric events for its own units.
std::string Batch(int t, int b) {
  return EventBatch("t" + std::to_string(t) + "-b" + std::to_string(b), kUnitsPerBatch);
}

class ExperimentsEventsE2E : public ExperimentsEventsFixture {
 protected:
  ExperimentsEventsE2E() : ExperimentsEventsFixture("experiments_events") {}

  // Starts the service on the events directory; sets port_.
  void StartService(const std::string& log_name) {
    service_ = std::make_unique<Process>(
        std::vector<std::string>{CapstanBinary(), "experiments", "serve", "--store",
                                 store_->endpoint(), "--listen", "127.0.0.1:0", "--threads", "8",
                                 "--events-dir", dir_->path() + "/events",
                                 "--events-checkpoint-events", std::to_string(kCheckpointEvents),
                                 "--events-max-cached-units", std::to_string(kMaxCachedUnits)},
        dir_->path() + "/" + log_name);
    port_ = WaitForPrintedPort(*service_, "experiments listening on port ");
    ASSERT_NE(port_, 0) << service_->Log();
  }

  Json Get(const std::string& path) {
    HttpAnswer a = EventsHttp(port_, "GET", path);
    EXPECT_EQ(a.status, 200) << path << " " << a.body;
    return Json::parse(a.body, nullptr, false);
  }
};

TEST_F(ExperimentsEventsE2E, KillNineLosesNoAcknowledgedEventAndCountsNoneTwice) {
  ASSERT_NO_FATAL_FAILURE(StartService("service-1.log"));
  std::vector<std::vector<std::string>> batches(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int b = 0; b < kBatchesPerThread; ++b) batches[t].push_back(Batch(t, b));
  }
  const int total_batches = kThreads * kBatchesPerThread;
  const int events_per_batch = 2 * kUnitsPerBatch;

  // Phase 1: concurrent posting; the service is killed once a third is in.
  std::vector<std::vector<bool>> acked(kThreads, std::vector<bool>(kBatchesPerThread, false));
  std::atomic<int> acked_batches{0};
  std::atomic<int> throttled{0};
  std::atomic<int> finished_clients{0};
  auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int b = 0; b < kBatchesPerThread; ++b) {
        HttpAnswer a = EventsHttp(port_, "POST", "/v1/events", batches[t][b]);
        if (a.status == 429) {  // behind: this batch is simply not acknowledged
          throttled.fetch_add(1);
          continue;
        }
        if (a.status != 200) break;  // the service is gone
        Json r = Json::parse(a.body, nullptr, false);
        EXPECT_EQ(r["accepted"], events_per_batch) << a.body;
        acked[t][b] = true;
        acked_batches.fetch_add(1);
      }
      finished_clients.fetch_add(1);
    });
  }
  // A third in, or every client done (the service died early: the checks
  // below still hold, and fail if an acknowledged batch was lost).
  ASSERT_TRUE(Eventually(
      [&] {
        return acked_batches.load() >= total_batches / 3 || finished_clients.load() == kThreads;
      },
      120s));
  int acked_before_kill = acked_batches.load();
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  service_->Signal(SIGKILL);
  service_->Wait(30s);
  for (std::thread& c : clients) c.join();
  int acked_total = acked_batches.load();
  std::printf(
      "phase 1: %d of %d batches acknowledged (%d when SIGKILL was sent, %d throttled); "
      "ingestion %.0f events/s with fsync (%d client threads, %d events per batch)\n",
      acked_total, total_batches, acked_before_kill, throttled.load(),
      acked_before_kill * events_per_batch / seconds, kThreads, events_per_batch);
  if (acked_total == total_batches) {
    std::printf(
        "note: every batch was acknowledged before SIGKILL landed; the restart and "
        "re-send checks still run\n");
  }

  // Phase 2: restart on the same directory. The log already holds every
  // acknowledged event (and possibly some unacknowledged ones, whole).
  ASSERT_NO_FATAL_FAILURE(StartService("service-2.log"));
  Json status = Get("/v1/events/status");
  uint64_t logged = status["logSequence"].get<uint64_t>();
  EXPECT_GE(logged, static_cast<uint64_t>(acked_total) * events_per_batch) << status.dump();
  EXPECT_EQ(logged % events_per_batch, 0u) << "a batch was stored in part: " << status.dump();
  // Open replayed the log after the last checkpoint that reached the disk.
  EXPECT_EQ(status["aggregatedSequence"].get<uint64_t>(), logged) << status.dump();
  EXPECT_LE(status["replayedOnOpen"].get<uint64_t>(), logged) << status.dump();
  std::printf("restart: %llu events in the log, %llu replayed after the checkpoint\n",
              static_cast<unsigned long long>(logged),
              static_cast<unsigned long long>(status["replayedOnOpen"].get<uint64_t>()));

  // Phase 3: every batch again, same keys. Acknowledged ones are all
  // duplicates; the others are all new or all duplicates.
  std::atomic<int> resent_new_batches{0};
  started = std::chrono::steady_clock::now();
  clients.clear();
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int b = 0; b < kBatchesPerThread; ++b) {
        HttpAnswer a;
        for (int attempt = 0; attempt < 100; ++attempt) {  // bounded; 429 asks to come back
          a = EventsHttp(port_, "POST", "/v1/events", batches[t][b]);
          if (a.status != 429) break;
        }
        ASSERT_EQ(a.status, 200) << a.body;
        Json r = Json::parse(a.body, nullptr, false);
        int accepted = r["accepted"].get<int>();
        int duplicates = r["duplicates"].get<int>();
        EXPECT_EQ(accepted + duplicates, events_per_batch);
        if (acked[t][b]) {
          EXPECT_EQ(accepted, 0) << "acknowledged batch " << t << "/" << b << " was lost";
        } else {
          EXPECT_TRUE(accepted == 0 || accepted == events_per_batch) << a.body;
          if (accepted > 0) resent_new_batches.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& c : clients) c.join();
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("phase 3: %d batches re-sent, %d of them new; %.0f events/s (dedup included)\n",
              total_batches, resent_new_batches.load(), total_batches * events_per_batch / seconds);

  // Exactly once: the log and the results hold each distinct event once.
  const uint64_t distinct = static_cast<uint64_t>(total_batches) * events_per_batch;
  status = Get("/v1/events/status");
  EXPECT_EQ(status["logSequence"].get<uint64_t>(), distinct) << status.dump();
  Json results = Get("/v1/experiments/checkout/results");
  ASSERT_TRUE(results.is_object());
  // The results waited for the aggregation to reach every acknowledged event.
  status = Get("/v1/events/status");
  EXPECT_EQ(status["aggregatedSequence"].get<uint64_t>(), distinct) << status.dump();
  uint64_t units = 0;
  for (const Json& v : results["variants"]) units += v["units"].get<uint64_t>();
  EXPECT_EQ(units, distinct / 2) << results.dump();
  EXPECT_EQ(results["srm"]["status"], "ok") << results.dump();
  ASSERT_EQ(results["metrics"].size(), 1u) << results.dump();
  double clicks = 0;
  for (const Json& v : results["metrics"][0]["variants"]) {
    clicks += v["mean"].get<double>() * v["n"].get<double>();
  }
  EXPECT_DOUBLE_EQ(clicks, static_cast<double>(distinct / 2));

  // Phase 4: the units of batch kReturningBatch of every thread (long
  // evicted, or past the cache at the restart) come back with one more
  // click each: read back, counted once, no new units.
  constexpr int kReturningBatch = 5;
  const uint64_t read_back_before = status["unitsReadBack"].get<uint64_t>();
  for (int t = 0; t < kThreads; ++t) {
    std::string body;
    for (int i = 0; i < kUnitsPerBatch; ++i) {
      std::string unit = "t" + std::to_string(t) + "-b" + std::to_string(kReturningBatch) + "-u" +
                         std::to_string(i);
      body += R"({"type":"value","key":"again-)" + unit + R"(","experiment":"checkout","unit":")" +
              unit + R"(","metric":"clicks","value":1,"ts":1700000000002})" + "\n";
    }
    HttpAnswer a;
    for (int attempt = 0; attempt < 100; ++attempt) {  // bounded; 429 asks to come back
      a = EventsHttp(port_, "POST", "/v1/events", body);
      if (a.status != 429) break;
    }
    ASSERT_EQ(a.status, 200) << a.body;
  }
  results = Get("/v1/experiments/checkout/results");
  ASSERT_TRUE(results.is_object());
  units = 0;
  for (const Json& v : results["variants"]) units += v["units"].get<uint64_t>();
  EXPECT_EQ(units, distinct / 2) << results.dump();
  clicks = 0;
  for (const Json& v : results["metrics"][0]["variants"]) {
    clicks += v["mean"].get<double>() * v["n"].get<double>();
  }
  EXPECT_NEAR(clicks, static_cast<double>(distinct / 2 + kThreads * kUnitsPerBatch), 1e-6);
  status = Get("/v1/events/status");
  const uint64_t read_back = status["unitsReadBack"].get<uint64_t>() - read_back_before;
  EXPECT_GT(read_back, 0u) << status.dump();
  EXPECT_LE(read_back, static_cast<uint64_t>(kThreads * kUnitsPerBatch)) << status.dump();
  std::printf("phase 4: %d units came back, %llu of them read back from the database\n",
              kThreads * kUnitsPerBatch, static_cast<unsigned long long>(read_back));

  service_->Signal(SIGTERM);
  int wait = service_->Wait(30s);
  EXPECT_TRUE(wait != -1 && WIFEXITED(wait) && WEXITSTATUS(wait) == 0) << service_->Log();
  service_.reset();
}

TEST_F(ExperimentsEventsE2E, BadBatchesAreRefusedWithTheLineAndField) {
  ASSERT_NO_FATAL_FAILURE(StartService("service.log"));
  HttpAnswer bad =
      EventsHttp(port_, "POST", "/v1/events",
                 R"({"type":"exposure","key":"k","experiment":"e","unit":"u","variant":"v","ts":1})"
                 "\n"
                 R"({"type":"value","key":"k2","experiment":"e","unit":"u","metric":"m","ts":1})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  Json error = Json::parse(bad.body, nullptr, false)["error"];
  EXPECT_EQ(error["line"], 2) << bad.body;
  EXPECT_EQ(error["field"], "value") << bad.body;
  // Nothing of a refused batch is stored.
  EXPECT_EQ(Get("/v1/events/status")["logSequence"], 0) << bad.body;
  HttpAnswer unknown = EventsHttp(port_, "GET", "/v1/experiments/none/results");
  EXPECT_EQ(unknown.status, 200) << unknown.body;
  EXPECT_EQ(Json::parse(unknown.body, nullptr, false)["srm"]["status"], "insufficient_data");
}

}  // namespace
}  // namespace capstan::e2e
