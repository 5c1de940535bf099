// Google Benchmark of the statistics engine: how many comparisons a core
// analyses per second, against the research goal of recomputing 30,000
// experiments x 50 metrics every minute (25,000 analyses/s).
#include <benchmark/benchmark.h>

#include "experiments/analyze.h"
#include "experiments/sequential.h"
#include "experiments/stats.h"

namespace capstan::experiments::stats {
namespace {

const ArmMoments kControl{100000, 0.101, 0.0908};
const ArmMoments kTreatment{100500, 0.104, 0.0932};

void BM_WelchTTest(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(WelchTTest(kControl, kTreatment, 0.05));
}
BENCHMARK(BM_WelchTTest);

void BM_RelativeLift(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(RelativeLiftTest(kControl, kTreatment, 0.05));
}
BENCHMARK(BM_RelativeLift);

void BM_Cuped(benchmark::State& state) {
  CupedArmSums a{20000, 20100.5, 60210.2, 40050.1, 100400.7, 50200.3};
  CupedArmSums b{21000, 21400.2, 64800.9, 42030.6, 105100.2, 53100.8};
  for (auto _ : state) benchmark::DoNotOptimize(CupedTest(a, b, 0.05));
}
BENCHMARK(BM_Cuped);

// Clicks per session with a pre-period: 1000 units per arm.
void BM_CupedRatio(benchmark::State& state) {
  CupedRatioArmSums a{1000,
                      {1000, 1200, 2900, 4000, 20000, 6100},
                      {1000, 1150, 2800, 3900, 19500, 5800},
                      2200,
                      5000,
                      4700,
                      16000};
  CupedRatioArmSums b{1000,
                      {1000, 1300, 3200, 4000, 20100, 6600},
                      {1000, 1160, 2850, 3950, 19800, 5900},
                      2350,
                      5200,
                      4650,
                      16100};
  for (auto _ : state) benchmark::DoNotOptimize(CupedRatioTest(a, b, 0.05));
}
BENCHMARK(BM_CupedRatio);

void BM_SequentialWelch(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(SequentialWelchTest(kControl, kTreatment, 0.05, 5000));
  }
}
BENCHMARK(BM_SequentialWelch);

// The whole JSON path of one request, parsing excluded.
void BM_AnalyzeJsonWelch(benchmark::State& state) {
  Json request =
      Json::parse(R"({"op":"welchTTest","a":{"n":100000,"mean":0.101,"variance":0.0908},)"
                  R"("b":{"n":100500,"mean":0.104,"variance":0.0932}})");
  for (auto _ : state) benchmark::DoNotOptimize(AnalyzeJson(request));
}
BENCHMARK(BM_AnalyzeJsonWelch);

}  // namespace
}  // namespace capstan::experiments::stats

BENCHMARK_MAIN();
