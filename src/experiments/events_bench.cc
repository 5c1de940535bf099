// Google Benchmark of event ingestion (a tool, not a test): the JSON-lines
// decoder (fast path and reference) and EventStore::Append with many units,
// in the shape bench/experiments.sh sends (half exposures, half value
// events, every unit new). "cpu_ns_per_event" is the process's CPU time
// (every thread: callers, writer, aggregator, RocksDB) per event, so
// 1e9 / cpu_ns_per_event is events per second per core (the benchmark's
// own copying of the batches left out).
//   build/release/src/experiments/events_bench --benchmark_filter=Append
//
// With UNITS set it runs the "many units" mode instead (events_bench_units.cc):
// one long Append run until UNITS distinct units were seen, a line of CPU
// per event for each REPORT_UNITS of them.
//   UNITS=30000000 RETURNING=0.5 build/release/src/experiments/events_bench
#include <sys/resource.h>
#include <time.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "experiments/event_store.h"
#include "experiments/events.h"

namespace capstan::experiments {
int RunManyUnits();  // events_bench_units.cc
namespace {

double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Batch `n` of `events` events: exposures and value events of events/2 new units.
std::string Body(uint64_t n, int events) {
  std::string body;
  for (int i = 0; i < events / 2; ++i) {
    std::string unit = "r1-" + std::to_string(n) + "-" + std::to_string(i);
    body += R"({"type":"exposure","key":"x)" + unit + R"(","experiment":"bench-exp","unit":")" +
            unit + R"(","variant":")" + (i % 2 == 0 ? "control" : "treatment") +
            R"(","ts":1700000000000})" + "\n";
    body += R"({"type":"value","key":"v)" + unit + R"(","experiment":"bench-exp","unit":")" + unit +
            R"(","metric":"revenue","value":)" + std::to_string(i % 7) + R"(,"ts":1700000001000})" +
            "\n";
  }
  return body;
}

void BM_DecodeBatch(benchmark::State& state) {
  const std::string body = Body(0, 1000);
  for (auto _ : state) {
    absl::StatusOr<std::vector<Event>> events = DecodeEventBatch(body);
    if (!events.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(events);
  }
  state.SetItemsProcessed(state.iterations() * 1000);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}
BENCHMARK(BM_DecodeBatch);

// The nlohmann decoder alone, line by line: what the fast path saves.
void BM_DecodeReference(benchmark::State& state) {
  const std::string body = Body(0, 1000);
  std::vector<std::string_view> lines;
  for (size_t at = 0; at < body.size();) {
    size_t end = body.find('\n', at);
    lines.push_back(std::string_view(body).substr(at, end - at));
    at = end + 1;
  }
  for (auto _ : state) {
    for (std::string_view line : lines) benchmark::DoNotOptimize(DecodeEventLineReference(line));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(lines.size()));
}
BENCHMARK(BM_DecodeReference);

// Append of pre-decoded 5,000-event batches from one caller, fsync on
// (range 1) or off (0), until the aggregation has caught up.
void BM_Append(benchmark::State& state) {
  constexpr int kBatch = 5000;
  std::string pattern = (std::filesystem::temp_directory_path() / "events_bench_XXXXXX").string();
  std::string dir = ::mkdtemp(pattern.data());
  std::vector<std::vector<Event>> batches;
  for (uint64_t n = 0; n < 200; ++n) batches.push_back(*DecodeEventBatch(Body(n, kBatch)));
  {
    auto store = EventStore::Open({.directory = dir, .sync = state.range(0) != 0});
    if (!store.ok()) {
      state.SkipWithError(std::string(store.status().message()).c_str());
      return;
    }
    double cpu_before = ProcessCpuSeconds();
    double preparing = 0;  // this thread's CPU making the batches: not the store's
    uint64_t round = 0;
    for (auto _ : state) {
      state.PauseTiming();
      double started = ThreadCpuSeconds();
      std::vector<Event> batch = batches[round % batches.size()];
      if (round >= batches.size()) {  // new keys and units each round
        std::string suffix = "#" + std::to_string(round / batches.size());
        for (Event& e : batch) e.key += suffix, e.unit += suffix;
      }
      ++round;
      preparing += ThreadCpuSeconds() - started;
      state.ResumeTiming();
      // When the aggregation is behind, Append refuses the batch (a service
      // answers 429): wait for it, as events_bench_units.cc does, rather
      // than fail. The wait is part of what ingestion costs, so it is timed.
      if (!(*store)->Admit().ok()) (void)(*store)->Sums("bench-exp");
      absl::StatusOr<AppendResult> r = (*store)->Append(std::move(batch));
      if (!r.ok() || r->accepted != kBatch) {
        state.SkipWithError(r.ok() ? "append accepted fewer events than sent"
                                   : std::string(r.status().message()).c_str());
        break;  // the benchmark library forbids timing calls after an error
      }
    }
    benchmark::DoNotOptimize((*store)->Sums("bench-exp"));  // the aggregation caught up
    double cpu = ProcessCpuSeconds() - cpu_before - preparing;
    double events = static_cast<double>(state.iterations()) * kBatch;
    state.SetItemsProcessed(static_cast<int64_t>(events));
    state.counters["cpu_ns_per_event"] = cpu * 1e9 / events;
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Append)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace capstan::experiments

int main(int argc, char** argv) {
  if (std::getenv("UNITS") != nullptr) return capstan::experiments::RunManyUnits();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
