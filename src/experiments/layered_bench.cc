// Google Benchmark of the native layered model (part of experiments_bench):
// one unit evaluated against 1, 10 and 100 running experiments, each in its
// own layer (so each evaluation makes 100 assignments at 100), through the
// Assigner as a service would call it, with the result object reused.
//
//   build/release/src/experiments/experiments_bench --benchmark_filter=Layered
//
// items_per_second is evaluations per second on one thread (one core).
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "experiments/assigner.h"

namespace capstan::experiments {
namespace {

// `count` layers in one domain, each with one running 50/50 experiment owning
// a parameter; with `condition`, each experiment targets {"country": $in}.
std::shared_ptr<const ConfigSnapshot> LayeredSnapshot(int count, bool condition) {
  std::vector<ConfigSnapshot::StoredDocument> documents;
  auto add = [&documents](DocumentKind kind, const std::string& id, const std::string& json) {
    documents.push_back({ModelDocumentKey(kind, id), json, 1});
  };
  add(DocumentKind::kDomain, "main", R"({"id":"main"})");
  for (int i = 0; i < count; ++i) {
    std::string n = std::to_string(i);
    add(DocumentKind::kLayer, "layer-" + n,
        R"({"id":"layer-)" + n + R"(","domain":"main","parameters":{"param-)" + n + R"(":0}})");
    add(DocumentKind::kExperiment, "exp-" + n,
        R"({"id":"exp-)" + n + R"(","layer":"layer-)" + n + R"(","state":"running",)" +
            (condition ? R"("condition":{"country":{"$in":["US","CA"]}},)" : "") +
            R"("variants":[{"id":"control"},{"id":"treatment","parameters":{"param-)" + n +
            R"(":1}}]})");
  }
  auto snapshot = ConfigSnapshot::BuildFromStore(documents);
  if (!snapshot.ok()) std::abort();
  return *snapshot;
}

// Distinct units, cycled through, so the hash work is real and the branch
// predictor cannot learn one unit's path.
std::vector<Json> Users() {
  std::vector<Json> users;
  for (int i = 0; i < 1024; ++i) {
    users.push_back({{"id", "user-" + std::to_string(100000 + i)}, {"country", "US"}});
  }
  return users;
}

void LayeredEvaluate(benchmark::State& state, bool condition) {
  int count = static_cast<int>(state.range(0));
  Assigner assigner(LayeredSnapshot(count, condition));
  std::vector<Json> users = Users();
  EvaluationResult result;
  size_t i = 0, assigned = 0;
  for (auto _ : state) {
    assigner.Evaluate(users[i++ & 1023], &result);
    assigned += result.assignments().size();
    benchmark::DoNotOptimize(result.parameters().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["assignments_per_eval"] =
      static_cast<double>(assigned) / static_cast<double>(state.iterations());
}

void BM_LayeredEvaluate(benchmark::State& state) { LayeredEvaluate(state, false); }
BENCHMARK(BM_LayeredEvaluate)->Arg(1)->Arg(10)->Arg(100);

void BM_LayeredEvaluateWithCondition(benchmark::State& state) { LayeredEvaluate(state, true); }
BENCHMARK(BM_LayeredEvaluateWithCondition)->Arg(1)->Arg(10)->Arg(100);

// Evaluation plus exposure logging, every unit already logged (the steady state).
void BM_LayeredEvaluateAndLogExposure(benchmark::State& state) {
  Assigner assigner(LayeredSnapshot(1, false));
  std::vector<Json> users = Users();
  ExposureLogger exposures(1 << 16, [](const Exposure&) {});
  EvaluationResult result;
  size_t i = 0;
  for (auto _ : state) {
    assigner.Evaluate(users[i++ & 1023], &result);
    benchmark::DoNotOptimize(exposures.Log(result));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LayeredEvaluateAndLogExposure);

void BM_ExposureDedup(benchmark::State& state) {
  ExposureDeduper deduper(1 << 20);
  std::vector<std::string> units;
  for (int i = 0; i < 1024; ++i) units.push_back("user-" + std::to_string(100000 + i));
  size_t i = 0;
  for (auto _ : state)
    benchmark::DoNotOptimize(deduper.FirstSeen("exp-0", "control", units[i++ & 1023]));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ExposureDedup);

}  // namespace
}  // namespace capstan::experiments
