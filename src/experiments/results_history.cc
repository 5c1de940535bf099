#include "experiments/results_history.h"

#include <algorithm>

#include "base/logging.h"

namespace capstan::experiments {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json LiftOf(const Json& side) {
  if (!side.is_object()) return nullptr;
  return Json{{"lift", side.value("lift", Json())}, {"ci", side.value("ci", Json())}};
}

}  // namespace

std::vector<std::string> RunningExperiments(const DocumentSnapshot& documents) {
  std::vector<std::string> ids;
  for (const auto& [id, doc] : documents.Of("experiments")) {
    const Json& spec = doc->spec;
    if (spec.is_object() && spec.value("state", std::string()) == "running") ids.push_back(id);
  }
  return ids;
}

ResultsHistory::ResultsHistory(RunningFn running, FetchFn fetch, ResultsHistoryOptions options)
    : running_(std::move(running)), fetch_(std::move(fetch)), options_(options) {}

ResultsHistory::~ResultsHistory() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ResultsHistory::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ResultsHistory::Run() {
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stopping_) {
    lock.unlock();
    SampleOnce(NowMs());
    lock.lock();
    // A timer, not a synchronization: the destructor's notify ends the wait.
    stop_cv_.wait_for(lock, options_.interval, [this] { return stopping_; });
  }
}

Json ResultsHistory::CompactSample(const Json& results, int64_t now_ms) {
  Json units = Json::object();
  for (const Json& variant : results.value("variants", Json::array())) {
    if (variant.is_object() && variant.contains("variant")) {
      units[variant["variant"].get<std::string>()] = variant.value("units", Json(0));
    }
  }
  Json metrics = Json::array();
  for (const Json& metric : results.value("metrics", Json::array())) {
    if (!metric.is_object()) continue;
    Json rows = Json::array();
    for (const Json& row : metric.value("variants", Json::array())) {
      if (!row.is_object()) continue;
      Json out = {{"variant", row.value("variant", Json())},
                  {"n", row.value("n", Json())},
                  {"mean", row.value("mean", Json())}};
      if (auto comparison = row.find("comparison");
          comparison != row.end() && comparison->is_object()) {
        out["absolute"] = LiftOf(comparison->value("absolute", Json()));
        out["relative"] = LiftOf(comparison->value("relative", Json()));
      }
      rows.push_back(std::move(out));
    }
    metrics.push_back({{"metric", metric.value("metric", Json())},
                       {"kind", metric.value("kind", Json())},
                       {"variants", std::move(rows)}});
  }
  return {{"t", now_ms}, {"units", std::move(units)}, {"metrics", std::move(metrics)}};
}

void ResultsHistory::SampleOnce(int64_t now_ms) {
  for (const std::string& id : running_()) SampleExperiment(id, now_ms);
}

void ResultsHistory::SampleExperiment(const std::string& id, int64_t now_ms) {
  {
    std::optional<Json> results = fetch_(id);
    if (!results.has_value() || !results->is_object()) return;
    Json sample = CompactSample(*results, now_ms);
    MutexLock lock(&mu_);
    auto it = rings_.find(id);
    if (it == rings_.end()) {
      if (rings_.size() >= options_.max_experiments) {
        auto oldest =
            std::min_element(rings_.begin(), rings_.end(), [](const auto& a, const auto& b) {
              return a.second.last_sampled_ms < b.second.last_sampled_ms;
            });
        rings_.erase(oldest);
      }
      it = rings_.emplace(id, Ring{}).first;
    }
    Ring& ring = it->second;
    ring.samples.push_back(std::move(sample));
    while (ring.samples.size() > options_.capacity) ring.samples.pop_front();
    ring.last_sampled_ms = now_ms;
  }
}

Json ResultsHistory::HistoryJson(const std::string& experiment) {
  bool sampled;
  {
    ReaderMutexLock lock(&mu_);
    sampled = rings_.contains(experiment);
  }
  if (!sampled) {
    std::vector<std::string> running = running_();
    if (std::find(running.begin(), running.end(), experiment) != running.end()) {
      SampleExperiment(experiment, NowMs());
    }
  }
  Json samples = Json::array();
  {
    ReaderMutexLock lock(&mu_);
    if (auto it = rings_.find(experiment); it != rings_.end()) {
      for (const Json& sample : it->second.samples) samples.push_back(sample);
    }
  }
  return {{"experiment", experiment},
          {"intervalMs", options_.interval.count()},
          {"capacity", options_.capacity},
          {"samples", std::move(samples)}};
}

std::unique_ptr<ResultsHistory> InstallResultsHistory(net::HttpRouter* router,
                                                      const ConfigWatcher* watcher,
                                                      ResultsHistoryOptions options) {
  auto running = [watcher] { return RunningExperiments(*watcher->snapshot()); };
  auto fetch = [router](const std::string& id) -> std::optional<Json> {
    // Experiment ids are [A-Za-z0-9._-] (model.h): no percent-encoding needed.
    net::HttpRequest request{.method = "GET", .path = "/v1/experiments/" + id + "/results"};
    net::HttpResponse response = router->Dispatch(request);
    if (response.status != 200) return std::nullopt;
    Json results = Json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    if (results.is_discarded()) return std::nullopt;
    return results;
  };
  auto history = std::make_unique<ResultsHistory>(running, fetch, options);
  ResultsHistory* raw = history.get();
  router->Add("GET", "/v1/experiments/{id}/results/history",
              [raw](const net::HttpRequest&, const net::PathParams& p) {
                return net::JsonResponse(200, raw->HistoryJson(p.at("id")).dump());
              });
  history->Start();
  return history;
}

}  // namespace capstan::experiments
