// Helpers shared by the event store's tests (event_store_test.cc,
// event_store_layout_test.cc, event_store_retention_test.cc,
// event_cuped_ratio_test.cc, event_log_test.cc): a temporary directory, a
// framed log record, event builders, the aggregation recomputed naively from
// the accepted events, and a reproducible random event stream.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "experiments/event_log.h"
#include "experiments/event_store.h"
#include "experiments/event_store_format.h"
#include "gtest/gtest.h"

namespace capstan::experiments::event_store_testing {

class TempDirectory {
 public:
  TempDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "event_store_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDirectory() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Holds the first call of a store hook (before_group_write,
// before_group_aggregate) until Release: the test sees the pipeline stopped
// at that point (WaitEntered) and acts meanwhile. Later calls pass through.
class FirstCallGate {
 public:
  std::function<void()> Hook() {
    return [this] {
      if (!first_) return;
      first_ = false;
      entered_.set_value();
      released_.wait();
    };
  }
  void WaitEntered() { entered_.get_future().wait(); }
  void Release() { release_.set_value(); }

 private:
  bool first_ = true;  // the hook's thread only
  std::promise<void> entered_;
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
};

// A framed group record of `count` events whose keys start with `tag`.
inline std::string Framed(const std::string& tag, uint32_t count) {
  std::string framed(EventLog::kFrameBytes + event_format::kLogRecordHeader, '\0');
  framed[EventLog::kFrameBytes] = static_cast<char>(event_format::kLogRecordVersion);
  std::memcpy(framed.data() + EventLog::kFrameBytes + 1, &count, 4);
  for (uint32_t i = 0; i < count; ++i) {
    AppendLogRecordEvent(Event{.type = EventType::kExposure,
                               .key = tag + "-" + std::to_string(i),
                               .experiment = "e",
                               .unit = "u" + std::to_string(i),
                               .variant = "control",
                               .timestamp_ms = 1},
                         &framed);
  }
  return framed;
}

constexpr int64_t kDayMs = 24 * 3600 * 1000;
constexpr int64_t kLookbackMs = 14 * kDayMs;  // EventStoreOptions' default

inline Event Exposure(std::string key, std::string unit, std::string variant,
                      std::string experiment = "e", int64_t ts = 0) {
  return Event{.type = EventType::kExposure,
               .key = std::move(key),
               .experiment = std::move(experiment),
               .unit = std::move(unit),
               .variant = std::move(variant),
               .timestamp_ms = ts};
}

inline Event Metric(EventType type, std::string key, std::string unit, std::string metric,
                    double value, double denominator = 0, int64_t ts = 0) {
  return Event{.type = type,
               .key = std::move(key),
               .experiment = "e",
               .unit = std::move(unit),
               .metric = std::move(metric),
               .value = type == EventType::kConversion ? 0 : value,
               .denominator = denominator,
               .timestamp_ms = ts};
}

// The aggregation recomputed from scratch: first occurrence of a key wins,
// a unit joins the variant of its first exposure (and takes its ts); a
// metric event at or after it is outcome, one in the lookback before it
// the covariate (for ratios its numerator and denominator), older ones
// nothing.
inline ExperimentSums Naive(const std::vector<Event>& events, std::string_view experiment) {
  std::set<std::string> keys;
  struct Unit {
    std::string variant;
    int64_t exposure_ms = 0;
    std::vector<const Event*> metric_events;
  };
  std::map<std::string, Unit> units;
  for (const Event& e : events) {
    if (e.experiment != experiment || !keys.insert(e.key).second) continue;
    Unit& u = units[e.unit];
    if (e.type != EventType::kExposure) {
      u.metric_events.push_back(&e);
    } else if (u.variant.empty()) {
      u.variant = e.variant;
      u.exposure_ms = e.timestamp_ms;
    }
  }
  ExperimentSums sums;
  for (const auto& [name, u] : units) {
    if (u.variant.empty()) continue;
    struct Totals {
      double x = 0, den = 0, c = 0, c_den = 0;
    };
    std::map<MetricId, Totals> totals;
    for (const Event* e : u.metric_events) {
      bool outcome = e->timestamp_ms >= u.exposure_ms;
      bool covariate = !outcome && e->timestamp_ms >= u.exposure_ms - kLookbackMs;
      if (!outcome && !covariate) continue;
      Totals& t = totals[MetricId{e->type, e->metric}];
      double& target = outcome ? t.x : t.c;
      if (e->type == EventType::kConversion) target = 1;
      if (e->type != EventType::kConversion) target += e->value;
      if (e->type == EventType::kRatio) (outcome ? t.den : t.c_den) += e->denominator;
    }
    VariantSums& v = sums.variants[u.variant];
    ++v.units;
    for (const auto& [id, t] : totals) {
      MetricSums& m = v.metrics[id];
      m.sum += t.x;
      m.sum_squares += t.x * t.x;
      m.covariate_sum += t.c;
      m.covariate_sum_squares += t.c * t.c;
      m.covariate_products += t.x * t.c;
      if (id.kind == EventType::kRatio) {
        m.den_sum += t.den;
        m.den_sum_squares += t.den * t.den;
        m.products += t.x * t.den;
        m.covariate_den_sum += t.c_den;
        m.covariate_den_sum_squares += t.c_den * t.c_den;
        m.covariate_num_den_products += t.c * t.c_den;
        m.covariate_den_products += t.x * t.c_den;
        m.den_covariate_products += t.den * t.c;
        m.den_covariate_den_products += t.den * t.c_den;
      }
    }
  }
  return sums;
}

inline void ExpectSumsNear(const ExperimentSums& got, const ExperimentSums& want) {
  ASSERT_EQ(got.variants.size(), want.variants.size());
  for (const auto& [name, w] : want.variants) {
    ASSERT_TRUE(got.variants.contains(name)) << name;
    const VariantSums& g = got.variants.at(name);
    EXPECT_EQ(g.units, w.units) << name;
    for (const auto& [id, wm] : w.metrics) {
      auto it = g.metrics.find(id);
      MetricSums gm = it == g.metrics.end() ? MetricSums{} : it->second;
      auto near = [](double a, double b) { return std::abs(a - b) <= 1e-9 * (1 + std::abs(b)); };
      EXPECT_TRUE(near(gm.sum, wm.sum)) << name << "/" << id.name << " " << gm.sum << " " << wm.sum;
      EXPECT_TRUE(near(gm.sum_squares, wm.sum_squares)) << name << "/" << id.name;
      EXPECT_TRUE(near(gm.den_sum, wm.den_sum)) << name << "/" << id.name;
      EXPECT_TRUE(near(gm.den_sum_squares, wm.den_sum_squares)) << name << "/" << id.name;
      EXPECT_TRUE(near(gm.products, wm.products)) << name << "/" << id.name;
      EXPECT_TRUE(near(gm.covariate_sum, wm.covariate_sum)) << name << "/" << id.name;
      EXPECT_TRUE(near(gm.covariate_sum_squares, wm.covariate_sum_squares))
          << name << "/" << id.name;
      EXPECT_TRUE(near(gm.covariate_products, wm.covariate_products)) << name << "/" << id.name;
      const std::pair<double, double> ratio_covariate[] = {
          {gm.covariate_den_sum, wm.covariate_den_sum},
          {gm.covariate_den_sum_squares, wm.covariate_den_sum_squares},
          {gm.covariate_num_den_products, wm.covariate_num_den_products},
          {gm.covariate_den_products, wm.covariate_den_products},
          {gm.den_covariate_products, wm.den_covariate_products},
          {gm.den_covariate_den_products, wm.den_covariate_den_products}};
      for (size_t i = 0; i < std::size(ratio_covariate); ++i) {
        EXPECT_TRUE(near(ratio_covariate[i].first, ratio_covariate[i].second))
            << name << "/" << id.name << " ratio covariate sum " << i << ": "
            << ratio_covariate[i].first << " vs " << ratio_covariate[i].second;
      }
    }
  }
}

// A reproducible stream over `units` units: exposures (some conflicting,
// some repeated), metric events of every kind (some before the exposure in
// arrival order; timestamps over 30 days, so outcome, covariate and too
// old all occur), and re-sent keys (identical events).
inline std::vector<Event> RandomEvents(uint32_t seed, int count, int units, bool conflicts) {
  std::mt19937 rng(seed);
  std::vector<Event> events;
  const char* variants[] = {"control", "b", "c"};
  for (int i = 0; i < count; ++i) {
    if (!events.empty() && rng() % 10 == 0) {  // a retry of an earlier event
      events.push_back(events[rng() % events.size()]);
      continue;
    }
    int unit = static_cast<int>(rng() % static_cast<uint32_t>(units));
    std::string u = "u" + std::to_string(unit);
    std::string key = "s" + std::to_string(seed) + "-" + std::to_string(i);
    int64_t ts = static_cast<int64_t>(rng() % (30 * kDayMs));
    switch (rng() % 5) {
      case 0: {
        int variant = unit % 3;
        if (conflicts && rng() % 8 == 0) variant = (variant + 1) % 3;
        events.push_back(Exposure(key, u, variants[variant], "e", ts));
        break;
      }
      case 1:
        events.push_back(Metric(EventType::kConversion, key, u, "buy", 0, 0, ts));
        break;
      case 2:
        events.push_back(Metric(EventType::kValue, key, u, "revenue",
                                static_cast<double>(rng() % 10000) / 7, 0, ts));
        break;
      default:
        events.push_back(Metric(EventType::kRatio, key, u, "ctr", static_cast<double>(rng() % 5),
                                static_cast<double>(1 + rng() % 9), ts));
        break;
    }
  }
  return events;
}

}  // namespace capstan::experiments::event_store_testing
