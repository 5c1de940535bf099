// experiments_rpc_load: a load generator for the experiments service's RPC
// API (bench/experiments.sh, row 6). Workers on one event loop keep calls in
// flight over a few multiplexed connections for --warmup then --duration
// seconds, and print one JSON line with the fields wrk's script prints
// (bench/experiments_wrk.lua), so the report reads both alike:
//   {"requests", "duration_us", "p50_us", "p90_us", "p99_us", "max_us",
//    "status_errors", "refused", ..., "service_cpu_us", "first_error"}
// requests counts the calls answered OK within the measured seconds,
// status_errors the other failed ones, refused those answered
// RESOURCE_EXHAUSTED (the service is behind). A refused worker waits the
// time the answer asks for ("retry after N s", EventsApi's wording; 100 ms
// without one) before its next call, as a client should, so a saturation run
// measures accepted events and not the cost of refusing
// (--ignore-retry-after resends at once). service_cpu_us is the server's
// utime+stime (/proc/PID/stat, --service-pid) over the measured seconds only.
//
//   experiments_rpc_load --port 8091 --mode evaluate --workers 32
//   experiments_rpc_load --port 8091 --mode ingest --workers 8 --batch 1000 --run r1
#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/measure.h"
#include "capstan/experiments.capstan.h"
#include "experiments_rpc/client.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/wait_group.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments_rpc {
namespace {

namespace v1 = ::capstan::experiments::v1;
using bench::LatencyHistogram;
using bench::NowMicros;

struct Flags {
  int port = 0;
  std::string mode = "evaluate";  // or "ingest"
  int workers = 32;               // calls in flight
  int connections = 2;
  double warmup = 1;
  double duration = 5;
  int batch = 1000;       // events per IngestEvents
  std::string run = "r";  // idempotency key prefix: unique per run
  int service_pid = 0;
  std::string experiment = "bench-exp";
  bool ignore_retry_after = false;
};

struct Shared {
  LatencyHistogram latency;
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> errors{0};   // measured, other than refused
  std::atomic<int64_t> refused{0};  // measured, RESOURCE_EXHAUSTED
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string first_error;
};

// Half exposures, half value events of the same units; every key unique.
void FillBatch(const Flags& f, int worker, int64_t call, v1::IngestEventsRequest* request) {
  request->Clear();
  for (int i = 0; i < f.batch / 2; ++i) {
    std::string unit =
        f.run + "-" + std::to_string(worker) + "-" + std::to_string(call) + "-" + std::to_string(i);
    v1::Event* exposure = request->add_events();
    exposure->set_key("x" + unit);
    exposure->set_experiment(f.experiment);
    exposure->set_unit(unit);
    exposure->set_timestamp_ms(1700000000000);
    exposure->mutable_exposure()->set_variant(i % 2 == 0 ? "control" : "treatment");
    v1::Event* value = request->add_events();
    value->set_key("v" + unit);
    value->set_experiment(f.experiment);
    value->set_unit(unit);
    value->set_timestamp_ms(1700000001000);
    value->mutable_value()->set_metric("revenue");
    value->mutable_value()->set_value(i % 7);
  }
}

// Waits `delay` on the loop, in short steps so a stop is seen soon.
net::Task<void> BackOff(net::EventLoop* loop, std::chrono::milliseconds delay, Shared* shared) {
  constexpr std::chrono::milliseconds kStep{50};
  while (delay.count() > 0 && !shared->stop.load(std::memory_order_relaxed)) {
    std::chrono::milliseconds step = std::min(delay, kStep);
    co_await loop->Sleep(step);
    delay -= step;
  }
}

net::Task<void> Worker(net::EventLoop* loop, std::shared_ptr<rpc::Channel> channel, const Flags* f,
                       int worker, Shared* shared, net::WaitGroup* done) {
  v1::ExperimentsClient client(channel);
  v1::EvaluateRequest evaluate;
  v1::IngestEventsRequest ingest;
  for (int64_t call = 0; !shared->stop.load(std::memory_order_relaxed); ++call) {
    absl::Status status;
    int64_t start = NowMicros();
    if (f->mode == "ingest") {
      FillBatch(*f, worker, call, &ingest);
      start = NowMicros();
      auto response = co_await client.IngestEvents(ingest, {.timeout = std::chrono::seconds(10)});
      status = response.status();
    } else {
      evaluate.set_attributes_json(R"({"id":"u-)" + std::to_string(worker) + "-" +
                                   std::to_string(call % 100000) + R"(","country":"US"})");
      auto response = co_await client.Evaluate(evaluate, {.timeout = std::chrono::seconds(10)});
      status = response.status();
    }
    const bool measuring = shared->measuring.load(std::memory_order_relaxed);
    if (absl::IsResourceExhausted(status)) {
      if (measuring) shared->refused.fetch_add(1, std::memory_order_relaxed);
      if (!f->ignore_retry_after) {
        std::chrono::milliseconds wait =
            RetryAfterOf(status).value_or(std::chrono::milliseconds(100));
        co_await BackOff(loop, wait, shared);
      }
      continue;
    }
    if (!status.ok()) {
      if (measuring) shared->errors.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(shared->mu);
      if (shared->first_error.empty()) shared->first_error = status.ToString();
      continue;
    }
    if (measuring) {
      shared->latency.Add(NowMicros() - start);
      shared->calls.fetch_add(1, std::memory_order_relaxed);
    }
  }
  done->Done();
}

net::Task<void> Load(net::EventLoop* loop, const Flags* f, Shared* shared) {
  std::vector<std::shared_ptr<rpc::Channel>> channels;
  for (int i = 0; i < std::max(1, f->connections); ++i) {
    channels.push_back(rpc::Channel::Create(loop, "127.0.0.1", f->port));
  }
  net::WaitGroup done(loop);
  for (int i = 0; i < f->workers; ++i) {
    done.Add();
    loop->Spawn(
        Worker(loop, channels[static_cast<size_t>(i) % channels.size()], f, i, shared, &done));
  }
  co_await done.Wait();
  for (auto& c : channels) c->Close();
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app("Load on the experiments service's RPC API (bench/experiments.sh).");
  app.add_option("--port", f.port, "The RPC port on 127.0.0.1.")->required();
  app.add_option("--mode", f.mode, "evaluate or ingest.")
      ->check(CLI::IsMember({"evaluate", "ingest"}));
  app.add_option("--workers", f.workers, "Calls in flight.")->check(CLI::Range(1, 4096));
  app.add_option("--connections", f.connections, "Connections they share.")
      ->check(CLI::Range(1, 64));
  app.add_option("--warmup", f.warmup, "Seconds before measuring.");
  app.add_option("--duration", f.duration, "Seconds measured.")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--batch", f.batch, "Events per IngestEvents.")->check(CLI::Range(2, 10000));
  app.add_option("--run", f.run, "Idempotency key prefix (unique per run).");
  app.add_option("--service-pid", f.service_pid, "The server's pid, for its CPU time.");
  app.add_option("--experiment", f.experiment, "The experiment events are for.");
  app.add_flag("--ignore-retry-after", f.ignore_retry_after,
               "Resend at once after RESOURCE_EXHAUSTED (saturation runs).");
  CLI11_PARSE(app, argc, argv);

  auto loops = net::LoopGroup::Start({.name = "exp-load"});
  if (!loops.ok()) {
    std::cerr << loops.status() << "\n";
    return 1;
  }
  net::EventLoop* loop = (*loops)->loop(0);
  Shared shared;
  std::atomic<bool> finished{false};
  std::thread driver([&] {
    net::BlockOn(loop, Load(loop, &f, &shared));
    finished = true;
  });
  auto seconds = [](double s) { return std::chrono::microseconds(static_cast<int64_t>(s * 1e6)); };
  std::this_thread::sleep_for(seconds(f.warmup));  // the load's own pacing, not synchronization
  int64_t cpu_before = f.service_pid > 0 ? bench::CpuMicros(f.service_pid) : 0;
  int64_t start = NowMicros();
  shared.measuring = true;
  std::this_thread::sleep_for(seconds(f.duration));
  shared.measuring = false;
  int64_t elapsed = NowMicros() - start;
  int64_t cpu_after = f.service_pid > 0 ? bench::CpuMicros(f.service_pid) : 0;
  shared.stop = true;
  driver.join();
  (*loops)->Stop();

  nlohmann::json out = {{"requests", shared.calls.load()},
                        {"duration_us", elapsed},
                        {"p50_us", static_cast<int64_t>(shared.latency.PercentileMs(0.50) * 1e3)},
                        {"p90_us", static_cast<int64_t>(shared.latency.PercentileMs(0.90) * 1e3)},
                        {"p99_us", static_cast<int64_t>(shared.latency.PercentileMs(0.99) * 1e3)},
                        {"max_us", static_cast<int64_t>(shared.latency.PercentileMs(1.0) * 1e3)},
                        {"status_errors", shared.errors.load()},
                        {"refused", shared.refused.load()},
                        {"read_errors", 0},
                        {"write_errors", 0},
                        {"timeouts", 0},
                        {"connect_errors", 0},
                        {"service_cpu_us", cpu_after - cpu_before},
                        {"first_error", shared.first_error}};
  std::cout << "JSON " << out.dump() << std::endl;
  return shared.calls.load() > 0 ? 0 : 1;
}

}  // namespace
}  // namespace capstan::experiments_rpc

int main(int argc, char** argv) { return capstan::experiments_rpc::Main(argc, argv); }
