// Cumulative results over time, for the console's results page: a small,
// bounded, in-memory sampler. Every `interval` it takes the results of each
// running experiment (GET /v1/experiments/{id}/results, through the
// service's router, so it needs no link to the event store) and keeps a
// compact sample (units per variant; per metric and variant n, mean, and the
// absolute and relative lift with its interval) in a ring of the last
// `capacity` samples per experiment.
//
//   GET /v1/experiments/{id}/results/history
//     -> {"experiment", "intervalMs", "capacity", "samples": [{"t": ms, "units": {...},
//         "metrics": [{"metric", "kind", "variants": [{"variant", "n", "mean",
//         "absolute": {"lift","ci"}?, "relative": {"lift","ci"}?}]}]}]}  oldest first;
//     an experiment never sampled has "samples": [].
//
// Memory: at most max_experiments rings (the least recently sampled one is
// dropped past it) of `capacity` samples each. The history is not durable:
// a restarted service starts empty (the results themselves are).
//
// Thread-safety: every method from any thread; the sampler thread runs
// between Start and the destructor.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "experiments/config_store.h"
#include "net/http_router.h"

namespace capstan::experiments {

struct ResultsHistoryOptions {
  std::chrono::milliseconds interval{10000};
  size_t capacity = 720;  // two hours at the default interval
  size_t max_experiments = 1000;
};

class ResultsHistory {
 public:
  // The ids of the experiments to sample now.
  using RunningFn = std::function<std::vector<std::string>()>;
  // An experiment's results JSON (as GET /v1/experiments/{id}/results), or
  // nullopt when there are none (no event store, an error).
  using FetchFn = std::function<std::optional<Json>(const std::string& experiment)>;

  ResultsHistory(RunningFn running, FetchFn fetch, ResultsHistoryOptions options = {});
  ~ResultsHistory();  // stops the sampler
  ResultsHistory(const ResultsHistory&) = delete;
  ResultsHistory& operator=(const ResultsHistory&) = delete;

  // Starts the sampler thread: a first sample at once, then every interval.
  void Start();
  // Samples every running experiment once, stamped `now_ms` (tests call it
  // directly instead of Start).
  void SampleOnce(int64_t now_ms);
  // What the history endpoint answers for `experiment`. A running
  // experiment not sampled yet (it started since the last tick) is sampled
  // first, so a results page shows a point as soon as it opens.
  Json HistoryJson(const std::string& experiment);

  // The compact sample of one results answer (public for tests).
  static Json CompactSample(const Json& results, int64_t now_ms);

 private:
  struct Ring {
    std::deque<Json> samples;
    int64_t last_sampled_ms = 0;
  };
  void Run();
  void SampleExperiment(const std::string& id, int64_t now_ms);

  RunningFn running_;
  FetchFn fetch_;
  ResultsHistoryOptions options_;

  mutable Mutex mu_;
  std::map<std::string, Ring, std::less<>> rings_ ABSL_GUARDED_BY(mu_);

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

// The ids of the experiments whose state is "running" in `documents`.
std::vector<std::string> RunningExperiments(const DocumentSnapshot& documents);

// Creates the sampler over `router` (it dispatches GET
// /v1/experiments/{id}/results in-process), adds GET
// /v1/experiments/{id}/results/history to it and starts sampling the
// experiments `watcher` shows running. Call after every results route is
// added; the result must outlive the router's use.
std::unique_ptr<ResultsHistory> InstallResultsHistory(net::HttpRouter* router,
                                                      const ConfigWatcher* watcher,
                                                      ResultsHistoryOptions options = {});

}  // namespace capstan::experiments
