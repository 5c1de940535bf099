#include "mesh/outlier.h"

#include <algorithm>
#include <cmath>

namespace capstan::mesh {

int OutlierDetector::MaybeEvaluate(const std::vector<OutlierStats*>& endpoints) {
  if (!due()) return 0;
  return Evaluate(endpoints);
}

int OutlierDetector::Evaluate(const std::vector<OutlierStats*>& endpoints) {
  auto now = clock_->Now();
  next_ = now + options_.interval;
  int ejected_now = 0;
  struct Candidate {
    OutlierStats* stats;
    double rate;
  };
  std::vector<Candidate> eligible;
  for (OutlierStats* s : endpoints) {
    if (s->ejected(now)) {
      ++ejected_now;
      continue;
    }
    uint64_t calls = s->successes + s->failures;
    if (calls >= static_cast<uint64_t>(options_.min_requests)) {
      eligible.push_back({s, static_cast<double>(s->successes) / static_cast<double>(calls)});
    }
  }
  int ejected = 0;
  if (eligible.size() >= static_cast<size_t>(std::max(1, options_.min_hosts))) {
    double mean = 0;
    for (const Candidate& c : eligible) mean += c.rate;
    mean /= static_cast<double>(eligible.size());
    double variance = 0;
    for (const Candidate& c : eligible) variance += (c.rate - mean) * (c.rate - mean);
    double stdev = std::sqrt(variance / static_cast<double>(eligible.size()));
    double threshold = mean - options_.stdev_factor * stdev;
    std::sort(eligible.begin(), eligible.end(),
              [](const Candidate& a, const Candidate& b) { return a.rate < b.rate; });
    int max_ejected =
        std::max<int>(1, static_cast<int>(endpoints.size()) * options_.max_ejection_percent / 100);
    for (const Candidate& c : eligible) {
      if (c.rate >= threshold || ejected_now >= max_ejected) break;
      auto duration = std::min<std::chrono::milliseconds>(
          options_.base_ejection_time * (c.stats->times_ejected + 1), options_.max_ejection_time);
      c.stats->ejected_until = now + duration;
      c.stats->times_ejected++;
      ++ejected_now;
      ++ejected;
    }
  }
  for (OutlierStats* s : endpoints) {
    if (!s->ejected(now) && s->times_ejected > 0) s->times_ejected--;
    s->successes = 0;
    s->failures = 0;
  }
  return ejected;
}

}  // namespace capstan::mesh
